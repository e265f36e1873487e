"""Shutdown closes a NATS connection cleanly even when the server is already gone."""

from __future__ import annotations

import asyncio
import contextlib

import nats
import pytest

from adapters.nats.closing import drain_or_close
from config.settings import Settings

pytestmark = pytest.mark.integration


async def _proxy(target: tuple[str, int]) -> tuple[asyncio.Server, set[asyncio.StreamWriter]]:
    """A TCP relay to NATS whose connections can all be cut (the server 'stops')."""
    open_writers: set[asyncio.StreamWriter] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        open_writers.update({writer, upstream_writer})
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", 0), open_writers


async def test_a_connection_whose_server_went_away_is_closed_without_error(
    settings: Settings,
) -> None:
    assert settings.nats.url
    host, port = settings.nats.url.removeprefix("nats://").split(":")
    server, writers = await _proxy((host, int(port)))
    proxy_port = server.sockets[0].getsockname()[1]
    nc = await nats.connect(
        f"nats://127.0.0.1:{proxy_port}", max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    await nc.publish("hes.test.closing", b"x")
    server.close()
    for writer in writers:
        writer.close()
    for _ in range(100):
        if nc.is_reconnecting:
            break
        await asyncio.sleep(0.05)
    assert nc.is_reconnecting
    with pytest.raises(nats.errors.ConnectionReconnectingError):
        await nc.drain()  # what shutdown used to call: a traceback at every stop
    await drain_or_close(nc)
    assert nc.is_closed
    await drain_or_close(nc)  # closing twice is harmless


async def test_a_live_connection_is_drained(settings: Settings) -> None:
    assert settings.nats.url
    nc = await nats.connect(settings.nats.url)
    await drain_or_close(nc)
    assert nc.is_closed
