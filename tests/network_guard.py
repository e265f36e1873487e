"""pytest plugin: no test opens a connection outside 127.0.0.0/8 and ::1 (DESIGN §6).

Every ``connect``/``connect_ex`` of a Python socket (asyncio, httpx, nats-py and the standard
library all end there) to another address is refused before a packet leaves, and the test that
was running fails, even when the code under test catches the error and carries on. Unix sockets
are allowed. C libraries that open their own sockets (libpq) are not seen; their URLs are the
run's loopback servers. Child processes are not covered either; they get loopback settings.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


class NonLoopbackConnect(ConnectionRefusedError):
    """A test tried to reach an address outside this machine's loopback."""


class Guard:
    """What the guard refused since the current test started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.violations: list[str] = []

    def record(self, target: str) -> None:
        """Remember a refused connect."""
        with self._lock:
            self.violations.append(target)

    def take(self) -> list[str]:
        """The refused connects so far, forgotten (a test that provokes them on purpose)."""
        with self._lock:
            taken, self.violations = self.violations, []
        return taken


GUARD = Guard()


def allowed(family: int, address: Any) -> bool:
    """True for unix sockets and loopback IP addresses (names other than localhost: no)."""
    if family not in (socket.AF_INET, socket.AF_INET6):
        return True
    host = str(address[0]).partition("%")[0] if isinstance(address, tuple) else str(address)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def _check(sock: socket.socket, address: Any) -> None:
    if not allowed(sock.family, address):
        GUARD.record(repr(address))
        raise NonLoopbackConnect(f"test network guard: connect to {address!r} refused")


def _connect(self: socket.socket, address: Any) -> None:
    _check(self, address)
    _original_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _check(self, address)
    return _original_connect_ex(self, address)


def pytest_configure(config: pytest.Config) -> None:
    """Install the guard for the whole run."""
    socket.socket.connect = _connect  # type: ignore[method-assign, assignment]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign, assignment]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Put the socket methods back."""
    socket.socket.connect = _original_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _original_connect_ex  # type: ignore[method-assign]


@pytest.fixture
def network_guard() -> Guard:
    """The guard, for tests that prove it (``take()`` forgives what they provoked)."""
    return GUARD


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Fail the test (setup, call or teardown) during which a non-loopback connect was refused."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    refused = GUARD.take()
    if refused and report.passed:
        report.outcome = "failed"
        report.longrepr = (
            f"test network guard ({call.when}): connections outside 127.0.0.0/8 and ::1 "
            "were attempted: " + ", ".join(refused)
        )
