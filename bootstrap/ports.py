"""Listening sockets bound up front, so that a port in use is a clear error at start."""

from __future__ import annotations

import errno
import socket


class PortInUse(RuntimeError):
    """A port this process needs cannot be bound; the message says which and what to do."""


def listening_socket(
    host: str, port: int, what: str, setting: str, backlog: int = 1024, *, reuse_port: bool = False
) -> socket.socket:
    """A TCP socket listening on ``host:port``; ``PortInUse`` naming ``what`` and ``setting``.

    ``reuse_port``: processes on one host share the port (SO_REUSEPORT, ``HES_REUSE_PORT``).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        why = (
            "is already in use"
            if exc.errno == errno.EADDRINUSE
            else f"cannot be bound: {exc.strerror}"
        )
        raise PortInUse(
            f"{what}: {host}:{port} {why}; stop what holds it or set {setting} to another port"
        ) from None
    return sock
