"""A NATS JetStream cluster on loopback ports, from the ``nats-server`` binary HES ships.

For the cluster test and ``hes bench cluster``: three (or more) servers, each with its own
JetStream store, routed to each other, so that streams with three replicas survive the loss of
one server. Every listener is on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from bootstrap.embedded import (
    EmbeddedServiceError,
    find_nats_server,
    jetstream_available,
    spawn_child,
)

_HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((_HOST, 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class ClusterNode:
    """One server of the cluster."""

    name: str
    client_port: int
    route_port: int
    store: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Client URL of this server."""
        return f"nats://{_HOST}:{self.client_port}"

    @property
    def alive(self) -> bool:
        """True while the server process runs."""
        return self.process is not None and self.process.poll() is None


@dataclass
class NatsCluster:
    """``size`` JetStream servers in one cluster under ``root`` (started by ``start``)."""

    root: Path
    size: int = 3
    name: str = "hes"
    nodes: list[ClusterNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.size)
        self.nodes = [
            ClusterNode(
                name=f"{self.name}-n{i}",
                client_port=ports[2 * i],
                route_port=ports[2 * i + 1],
                store=self.root / f"n{i}",
            )
            for i in range(self.size)
        ]

    @property
    def url(self) -> str:
        """Every server's client URL, comma-separated (the form ``HES_NATS_URL`` takes)."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 60.0) -> Self:
        """Start every server and wait until the cluster's JetStream answers on each."""
        for node in self.nodes:
            self._spawn(node)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while not jetstream_available(node.url, timeout=2.0):
                if not node.alive:
                    raise EmbeddedServiceError(f"NATS {node.name} exited: see {self._log(node)}")
                if time.monotonic() > deadline:
                    raise EmbeddedServiceError(f"NATS cluster not ready: see {self._log(node)}")
                time.sleep(0.2)
        return self

    def kill(self, index: int) -> ClusterNode:
        """SIGKILL server ``index`` (as a crash would)."""
        node = self.nodes[index]
        if node.process is not None and node.alive:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait(10)
        return node

    def restart(self, index: int) -> ClusterNode:
        """Start server ``index`` again on its ports and store."""
        node = self.nodes[index]
        if not node.alive:
            self._spawn(node)
        return node

    def stop(self) -> None:
        """Stop every server and remove the stores."""
        for node in self.nodes:
            if node.process is not None and node.alive:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(15)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(5)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _log(self, node: ClusterNode) -> Path:
        return node.store / "nats.log"

    def _spawn(self, node: ClusterNode) -> None:
        node.store.mkdir(parents=True, exist_ok=True)
        routes = ",".join(
            f"nats://{_HOST}:{other.route_port}" for other in self.nodes if other is not node
        )
        args = [
            str(find_nats_server()),
            "-js",
            "-sd",
            str(node.store),
            "-a",
            _HOST,
            "-p",
            str(node.client_port),
            "-n",
            node.name,
            "--cluster_name",
            self.name,
            "--cluster",
            f"nats://{_HOST}:{node.route_port}",
            "--routes",
            routes,
            "-l",
            str(self._log(node)),
        ]
        with self._log(node).open("ab") as log:
            node.process = spawn_child(
                args,
                cwd=node.store,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                death_signal=signal.SIGKILL,
            )
