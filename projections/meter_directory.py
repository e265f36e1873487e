"""Which meters exist, where they are and their last energy register: for ingest validation."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Any
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from commands.ingest import MeterInfo


class MeterDirectory:
    """Looks meters up in the read models, one query per request, with a short-lived cache."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        schema: str,
        ttl_seconds: float = 30.0,
        max_entries: int = 2_000_000,
    ) -> None:
        self.pool = pool
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._cache: dict[UUID, tuple[float, MeterInfo]] = {}
        self._query = sql.SQL(
            "SELECT m.id, m.serial, m.region, m.area, m.status, "
            "s.last_energy_wh, s.last_energy_ts "
            "FROM {s}.meters m LEFT JOIN {s}.meter_status s ON s.meter_id = m.id "
            "WHERE m.id = ANY(%s)"
        ).format(s=sql.Identifier(schema))

    async def lookup(self, ids: Collection[UUID]) -> Mapping[UUID, MeterInfo]:
        """Known meters among ``ids`` (unknown ones are absent)."""
        now = time.monotonic()
        found: dict[UUID, MeterInfo] = {}
        missing: list[UUID] = []
        for id_ in ids:
            hit = self._cache.get(id_)
            if hit is not None and now - hit[0] < self.ttl:
                found[id_] = hit[1]
            else:
                missing.append(id_)
        if missing:
            async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(self._query, (missing,))
                rows = await cur.fetchall()
            if len(self._cache) + len(rows) > self.max_entries:
                self._cache.clear()
            for row in rows:
                info = msgspec.convert(row, MeterInfo)
                self._cache[info.id] = (now, info)
                found[info.id] = info
        return found
