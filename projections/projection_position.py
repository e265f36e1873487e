"""How far a projection got, for read-your-writes: shared by the read-model query classes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

T = TypeVar("T")


async def poll_until(
    fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], seconds: float
) -> T:
    """Fetch until ``done`` holds or ``seconds`` pass (2 ms .. 50 ms apart); the last fetch."""
    deadline = time.monotonic() + seconds
    pause = 0.002
    while True:
        value = await fetch()
        if done(value) or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)


class ProjectionPosition:
    """Mixin: the tracking position of one application's projection and a wait for it."""

    pool: AsyncConnectionPool[Any]
    schema: sql.Identifier
    tracking: sql.Identifier
    """The projection's tracking table (``<projection name>_tracking``)."""
    application_name: str

    async def applied_position(self) -> int:
        """Notification id of the last event the projection applied (0 if none)."""
        query = sql.SQL("SELECT notification_id FROM {}.{} WHERE application_name = %s").format(
            self.schema, self.tracking
        )
        async with self.pool.connection() as conn:
            row = await (await conn.execute(query, (self.application_name,))).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    async def wait_for(self, notification_id: int, seconds: float) -> bool:
        """Wait up to ``seconds`` until the projection applied ``notification_id``; False if not."""
        applied = await poll_until(self.applied_position, lambda p: p >= notification_id, seconds)
        return applied >= notification_id
