"""Tariff engine: prices regions from their 15-minute load windows and expires overrides."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from commands.context import SYSTEM, CommandContext
from commands.tariffs import TariffBook
from config.settings import DatabaseSettings
from domain.errors import NotFound, ValidationFailed

log = logging.getLogger(__name__)

CHECKPOINT_ID = 1
REREAD = timedelta(seconds=60)
"""Windows updated this long before the checkpoint are read again: ``updated_at`` is a writer's
transaction start, so a slow transaction may commit a row stamped before the checkpoint."""
LOOKBACK = timedelta(days=1)
"""Only windows this recent are priced (the bucket index bounds the scan); a tariff ignores
windows older than its newest one anyway. A first run starts this far back."""

# Every changed window, oldest first: a region whose load rose through several windows since
# the last run records each tier it passed, not just the last one.
_CHANGED = """
SELECT region, bucket, load_pct, max(updated_at) OVER () AS newest
FROM {schema}.regional_load_15m
WHERE bucket >= %s AND updated_at > %s
ORDER BY bucket, region
"""

_ADVANCE = """
INSERT INTO {schema}.tariff_engine_state AS t (id, last_updated_at) VALUES (%s, %s)
ON CONFLICT (id) DO UPDATE
SET last_updated_at = greatest(t.last_updated_at, EXCLUDED.last_updated_at)
"""


class TariffEngine:
    """Turns changed regional load windows into ``applyTariffLoad`` commands of the system.

    A crash between the commands and the checkpoint only makes the next run repeat them; their
    idempotency keys make the repeats replays that record nothing. Engines of several worker
    processes may run at once: each command reloads the tariff and saves under optimistic
    concurrency, retrying on a version race, and equal keys collapse duplicate commands.
    """

    def __init__(
        self,
        database: DatabaseSettings,
        pool: AsyncConnectionPool[Any],
        tariffs: TariffBook | Callable[[], TariffBook],
    ) -> None:
        self.database = database
        self.pool = pool
        # A factory is called on first use (in a thread), and the engine closes what it built.
        self._tariffs = tariffs if isinstance(tariffs, TariffBook) else None
        self._build_tariffs = None if isinstance(tariffs, TariffBook) else tariffs
        self._owns_tariffs = self._tariffs is None
        ident = sql.Identifier(database.schema)
        self._checkpoint = sql.SQL(
            "SELECT last_updated_at FROM {}.tariff_engine_state WHERE id = %s"
        ).format(ident)
        self._changed = sql.SQL(_CHANGED).format(schema=ident)
        self._advance = sql.SQL(_ADVANCE).format(schema=ident)

    async def tariffs(self) -> TariffBook:
        """The tariff application: the one given, or built by the given factory on first use."""
        if self._tariffs is None:
            assert self._build_tariffs is not None
            self._tariffs = await asyncio.to_thread(self._build_tariffs)
        return self._tariffs

    async def close(self) -> None:
        """Close the tariff application if this engine built it."""
        if self._owns_tariffs and self._tariffs is not None:
            book, self._tariffs = self._tariffs, None
            await asyncio.to_thread(book.close)

    async def run_once(self, now: datetime) -> list[str]:
        """Price every region whose load changed since the checkpoint; return those repriced."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(self._checkpoint, (CHECKPOINT_ID,))
            row = await cur.fetchone()
            since: datetime = row[0] - REREAD if row is not None else now - LOOKBACK
            cur = await conn.execute(self._changed, (since - LOOKBACK, since))
            windows: list[tuple[str, datetime, float, datetime]] = await cur.fetchall()
        book = await self.tariffs()
        changed: list[str] = []
        for region, bucket, load_pct, _ in windows:
            if await asyncio.to_thread(_apply, book, region, bucket, load_pct):
                changed.append(region)
        await asyncio.to_thread(book.expire_overrides, now)
        if windows:
            async with self.pool.connection() as conn:
                await conn.execute(self._advance, (CHECKPOINT_ID, windows[0][3]))
        return changed


def _apply(book: TariffBook, region: str, bucket: datetime, load_pct: float) -> bool:
    """Apply one window's load to the region's tariff; True when a new price was recorded."""
    pct = round(load_pct, 3)  # the key's rounding, so equal keys always carry equal arguments
    ctx = CommandContext(actor=SYSTEM, idempotency_key=f"load:{region}:{bucket.isoformat()}:{pct}")
    try:
        outcome = book.apply_load(region, pct, bucket, ctx)
    except NotFound:
        return False  # the region has no tariff
    except ValidationFailed:
        log.warning("load %r of %s at %s cannot be priced", load_pct, region, bucket)
        return False
    return outcome.changed and not outcome.replayed
