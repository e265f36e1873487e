"""Test doubles that are real servers: an HTTP webhook receiver and an SMTP server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Request:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int


@dataclass
class WebhookReceiver:
    """An HTTP/1.1 server on a free port whose paths answer as told.

    ``/ok/...`` answers 200; ``/flaky/<n>/...`` answers 500 to its first n requests, then 200;
    ``/down/...`` always 503; ``/slow/...`` waits ``slow_seconds`` before answering 200;
    ``/lag/<ms>/...`` waits ``ms`` milliseconds before answering 200.
    """

    slow_seconds: float = 5.0
    requests: list[Request] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _seen: dict[str, int] = field(default_factory=dict)

    @property
    def base(self) -> str:
        """Base URL of the receiver."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def start(self) -> None:
        """Listen on a free port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def to(self, path: str) -> list[Request]:
        """Requests received on ``path``."""
        return [r for r in self.requests if r.path == path]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = await self._answer(path)
                self.requests.append(Request(path, headers, body, time.monotonic(), status))
                payload = b"ok" if status == 200 else b"nope"
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # client went away, or the server is stopping
        finally:
            writer.close()

    async def _answer(self, path: str) -> int:
        parts = path.strip("/").split("/")
        self._seen[path] = self._seen.get(path, 0) + 1
        if parts[0] == "flaky":
            return 500 if self._seen[path] <= int(parts[1]) else 200
        if parts[0] == "down":
            return 503
        if parts[0] == "slow":
            await asyncio.sleep(self.slow_seconds)
        if parts[0] == "lag":
            await asyncio.sleep(int(parts[1]) / 1000)
        return 200


class MailHandler:
    """Keeps every accepted message; refuses recipients starting with ``nobody@`` (550)."""

    def __init__(self) -> None:
        self.messages: list[Envelope] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        """Accept or refuse one recipient."""
        if address.startswith("nobody@"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keep the message."""
        self.messages.append(envelope)
        return "250 2.0.0 queued"


def smtp_server() -> tuple[Controller, MailHandler]:
    """A started in-process SMTP server on a free port and its handler."""
    handler = MailHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    return controller, handler


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 15.0, what: str = "condition"
) -> None:
    """Wait until ``check`` holds, polling; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {within}s")
        await asyncio.sleep(0.05)
