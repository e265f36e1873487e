"""Embedded PostgreSQL and NATS under watch: reaped and restarted when they die.

``hes up`` owns the embedded servers it started. When one exits (killed, crashed) it is reaped
at once (no ``<defunct>``), readiness fails naming it, and it is started again on the same data
directory and port, so every connection's URL stays right and clients reconnect. When it cannot
be restarted there (or dies too often), ``hes up`` stops with a non-zero exit code and the
reason: running on without its database or broker would only pretend to work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from adapters.metrics import CHILD_RESTARTS

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
"""Restarts within ``RESTART_WINDOW`` seconds after which the server counts as broken."""
RESTART_WINDOW = 300.0
FIRST_BACKOFF = 1.0
"""Wait before the first restart (doubling with each restart in the window)."""


class Server(Protocol):
    """An embedded server (bootstrap.embedded.EmbeddedPostgres / EmbeddedNats)."""

    port: int
    pid: int

    @property
    def owned(self) -> bool: ...

    @property
    def stopping(self) -> bool: ...

    def wait(self) -> int | None: ...

    def stop(self, timeout: float = 30.0) -> None: ...


class WatchedServer:
    """One embedded server, restarted on the same port when it exits unexpectedly."""

    def __init__(
        self,
        name: str,
        title: str,
        server: Server,
        restart: Callable[[], Server],
        on_fatal: Callable[[str], None],
    ) -> None:
        self.name = name
        """Its readiness check's name (embedded_postgres, embedded_nats)."""
        self.title = title
        self.server = server
        self._restart = restart
        self._on_fatal = on_fatal
        self._stopping = threading.Event()
        self._restarts: list[float] = []
        self._state = "running"
        self._detail = f"running (pid {server.pid}, port {server.port})"
        self._counted = CHILD_RESTARTS.labels(name)
        self._thread = threading.Thread(target=self._watch, name=f"watch-{name}", daemon=True)

    def start(self) -> None:
        """Start watching (only a server this process started can be watched)."""
        if self.server.owned:
            self._thread.start()

    def stop(self) -> None:
        """Stop the server (an exit now is expected) and the watch."""
        self._stopping.set()
        self.server.stop()
        if self._thread.ident is not None:
            self._thread.join(10)

    def health(self) -> tuple[bool, str]:
        """Whether the server runs, and how it is."""
        return self._state == "running", self._detail

    def _watch(self) -> None:
        while not self._stopping.is_set():
            server = self.server
            code = server.wait()
            if self._stopping.is_set() or server.stopping:
                return
            self._counted.inc()
            now = time.monotonic()
            self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW] + [now]
            backoff = FIRST_BACKOFF * 2 ** (len(self._restarts) - 1)
            self._state = "restarting"
            self._detail = f"exited with {code}; restarting in {backoff:.0f}s on port {server.port}"
            log.error(
                "embedded %s (pid %d) exited with %s; restarting it on port %d in %.0fs",
                self.title,
                server.pid,
                code,
                server.port,
                backoff,
            )
            if len(self._restarts) > MAX_RESTARTS:
                self._fail(f"it died {len(self._restarts)} times in {RESTART_WINDOW:.0f}s")
                return
            if self._stopping.wait(backoff):
                return
            try:
                fresh = self._restart()
            except Exception as exc:
                self._fail(f"restarting it failed: {exc}")
                return
            if fresh.port != server.port:  # every URL handed out names the old port
                fresh.stop()
                self._fail(f"it could only come back on port {fresh.port}, not {server.port}")
                return
            if self._stopping.is_set():  # stopped while it was restarting
                fresh.stop()
                return
            self.server = fresh
            self._state = "running"
            self._detail = (
                f"running (pid {fresh.pid}, port {fresh.port}); restarted after exit {code}"
            )
            log.warning("embedded %s is back (pid %d)", self.title, fresh.pid)

    def _fail(self, why: str) -> None:
        self._state = "failed"
        self._detail = f"down: {why}"
        message = f"embedded {self.title} died and is not coming back: {why}"
        log.error(message)
        self._on_fatal(message)
