"""How far a projection got, for read-your-writes: shared by the read-model query classes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from psycopg import sql
from psycopg_pool import AsyncConnectionPool


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
        deadline = time.monotonic() + seconds
        pause = 0.002
        while True:
            if await self.applied_position() >= notification_id:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)
