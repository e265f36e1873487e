"""Closing a NATS connection at shutdown, whatever state the server left it in."""

from __future__ import annotations

import logging

from nats import errors
from nats.aio.client import Client

log = logging.getLogger(__name__)


async def drain_or_close(nc: Client) -> None:
    """Drain the connection when it is up (pending publishes flushed); otherwise close it."""
    if nc.is_closed:
        return
    if nc.is_connected:
        try:
            await nc.drain()
            return
        except (errors.Error, TimeoutError) as exc:
            # The server went away during the drain (e.g. it is stopping with us).
            log.info("NATS drain at shutdown failed (%s); closing", type(exc).__name__)
    await nc.close()
