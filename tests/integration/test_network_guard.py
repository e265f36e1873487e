"""The test-suite guard refuses connections outside loopback, and fails the test that tried."""

from __future__ import annotations

import asyncio
import socket
import textwrap
from pathlib import Path

import pytest

from tests.network_guard import Guard, NonLoopbackConnect

ROOT = Path(__file__).resolve().parents[2]


def test_loopback_and_unix_sockets_pass(network_guard: Guard, tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=2):
            pass
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
    assert network_guard.take() == []


@pytest.mark.parametrize(
    "address", [("192.0.2.1", 9), ("10.0.0.1", 4059), ("203.0.113.7", 443), ("::ffff:10.0.0.1", 9)]
)
def test_other_addresses_are_refused_before_a_packet_leaves(
    network_guard: Guard, address: tuple[str, int]
) -> None:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family) as sock, pytest.raises(NonLoopbackConnect):
        sock.connect(address)
    with socket.socket(family) as sock, pytest.raises(NonLoopbackConnect):
        sock.connect_ex(address)
    assert len(network_guard.take()) == 2  # forgiven: this test provoked them on purpose


async def test_the_asyncio_path_is_guarded(network_guard: Guard) -> None:
    with pytest.raises(NonLoopbackConnect):
        await asyncio.open_connection("192.0.2.1", 9)
    assert network_guard.take() == ["('192.0.2.1', 9)"]


def test_a_test_that_swallows_the_refusal_still_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard does not rely on the error reaching pytest: the test itself is failed."""
    pytester.makepyfile(
        test_stray=textwrap.dedent(
            """
            import socket

            def test_dials_a_private_address():
                try:
                    socket.create_connection(("10.1.2.3", 4059), timeout=1)
                except OSError:
                    pass  # "unreachable meter": code under test carries on

            def test_stays_on_loopback():
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
            """
        )
    )
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = pytester.runpytest_subprocess("-p", "tests.network_guard", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*connections outside 127.0.0.0/8 and ::1*10.1.2.3*"])
