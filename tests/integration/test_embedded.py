"""Embedded PostgreSQL and NATS start under a temporary directory, work, stop and restart."""

from __future__ import annotations

import socket
from pathlib import Path

import nats
import psycopg
import pytest

from bootstrap.embedded import jetstream_available, start_nats, start_postgres

pytestmark = pytest.mark.integration


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_embedded_postgres_serves_tcp_and_keeps_data(tmp_path: Path) -> None:
    server = start_postgres(tmp_path)
    try:
        assert server.url.startswith("postgresql://postgres@127.0.0.1:")
        assert server.url.endswith("/hes")
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        # the same URL split into parts, as the eventsourcing settings do
        with psycopg.connect(
            host=server.host, port=server.port, user="postgres", password="", dbname="hes"
        ) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    finally:
        server.stop()
    assert not _accepts(server.port)

    again = start_postgres(tmp_path)
    try:
        assert again.url == server.url  # the previous port is reused when free
        with psycopg.connect(again.url) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    finally:
        again.stop()


async def test_embedded_nats_acknowledges_jetstream_publish(tmp_path: Path) -> None:
    server = start_nats(tmp_path)
    try:
        assert server.url.startswith("nats://127.0.0.1:")
        assert (tmp_path / "nats" / "nats.log").is_file()
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="EMBEDDED_TEST", subjects=["embedded.test.>"])
            ack = await js.publish("embedded.test.one", b"hello")
            assert ack.stream == "EMBEDDED_TEST"
            assert ack.seq == 1
        finally:
            await nc.close()
    finally:
        server.stop()
    assert not _accepts(server.port)

    again = start_nats(tmp_path)  # the stream survives a restart (file storage)
    try:
        nc = await nats.connect(again.url)
        try:
            info = await nc.jetstream().stream_info("EMBEDDED_TEST")
            assert info.state.messages == 1
        finally:
            await nc.close()
    finally:
        again.stop()


def test_second_process_reuses_running_nats(tmp_path: Path) -> None:
    """Two `hes` commands on one data directory share its NATS instead of clashing."""
    first = start_nats(tmp_path)
    try:
        second = start_nats(tmp_path)
        assert second.url == first.url and not second.owned
        second.stop()
        assert jetstream_available(first.url)
    finally:
        first.stop()
