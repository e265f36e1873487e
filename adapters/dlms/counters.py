"""Invocation counters per (meter, key version) in PostgreSQL: reserved before use, never reused.

The head-end's own counter (``client_next``) is advanced in the database before any of the
reserved values is put on the wire, so a crash can skip counters but never repeat one. The
meter's counter (``server_last``) must grow with every ciphered APDU it sends; a value that
does not is refused as a possible replay.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from adapters.dlms.session import CounterRejected, SessionError

MAX_COUNTER = 0xFFFF_FFFF
SERVER_SAVE_EVERY = 32
"""The meter's counter is checked against memory on every APDU and saved every this many
(and at the session's end): a long operation, such as an image transfer of a thousand blocks,
would otherwise write a row per block. A head-end that dies mid-session forgets at most this
many of the meter's counters; the meter's next session still starts above the saved one."""


class CounterExhausted(SessionError):
    """The 32-bit invocation counter of this key set ran out: new keys are needed."""


class PostgresCounterLedger:
    """The ``CounterLedger`` of one meter and key version."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        schema: str,
        meter: UUID,
        key_version: int,
        serial: str,
    ) -> None:
        self._pool = pool
        self._table = sql.Identifier(schema, "dlms_invocation_counters")
        self._meter = meter
        self._version = key_version
        self._serial = serial
        self._server_last: int | None = None
        self._unsaved = 0

    async def reserve(self, count: int, at_least: int) -> int:
        """Reserve ``count`` counters at or above ``at_least``; return the first one."""
        query = sql.SQL(
            "INSERT INTO {t} (meter_id, key_version, client_next) VALUES (%(m)s, %(v)s, "
            "%(floor)s + %(n)s) ON CONFLICT (meter_id, key_version) DO UPDATE SET "
            "client_next = GREATEST({t}.client_next, %(floor)s) + %(n)s, updated_at = now() "
            "RETURNING client_next - %(n)s"
        ).format(t=self._table)
        params = {"m": self._meter, "v": self._version, "floor": max(0, at_least), "n": count}
        async with self._pool.connection() as conn:
            row = await (await conn.execute(query, params)).fetchone()
        assert row is not None
        first = int(row[0])
        if first + count > MAX_COUNTER:
            raise CounterExhausted(
                f"meter {self._serial}: invocation counters of key version {self._version} "
                "are used up; set new keys"
            )
        return first

    async def accept_server(self, invocation_counter: int) -> None:
        """Record the meter's counter; ``CounterRejected`` unless it is above every earlier one."""
        last = await self._last()
        if invocation_counter <= last:
            raise CounterRejected(
                f"meter {self._serial} sent invocation counter {invocation_counter}, not above "
                f"{last} already seen (key version {self._version}): possible replay, rejected"
            )
        self._server_last = invocation_counter
        self._unsaved += 1
        if self._unsaved >= SERVER_SAVE_EVERY:
            await self.flush()

    async def flush(self) -> None:
        """Persist the meter's last accepted counter if it is not yet (session end)."""
        if not self._unsaved:
            return
        query = sql.SQL(
            "INSERT INTO {t} (meter_id, key_version, client_next, server_last) "
            "VALUES (%(m)s, %(v)s, 0, %(ic)s) ON CONFLICT (meter_id, key_version) DO UPDATE SET "
            "server_last = GREATEST({t}.server_last, %(ic)s), updated_at = now()"
        ).format(t=self._table)
        async with self._pool.connection() as conn:
            await conn.execute(
                query, {"m": self._meter, "v": self._version, "ic": self._server_last}
            )
        self._unsaved = 0

    async def note_meter_counter(self, value: int) -> None:
        """Keep the value the meter reported in 0.0.43.1.0.255."""
        query = sql.SQL(
            "INSERT INTO {t} (meter_id, key_version, client_next, meter_reported) "
            "VALUES (%(m)s, %(v)s, 0, %(r)s) ON CONFLICT (meter_id, key_version) DO UPDATE SET "
            "meter_reported = %(r)s, updated_at = now()"
        ).format(t=self._table)
        async with self._pool.connection() as conn:
            await conn.execute(query, {"m": self._meter, "v": self._version, "r": value})

    async def _last(self) -> int:
        if self._server_last is None:
            query = sql.SQL(
                "SELECT server_last FROM {t} WHERE meter_id = %s AND key_version = %s"
            ).format(t=self._table)
            async with self._pool.connection() as conn:
                row = await (await conn.execute(query, (self._meter, self._version))).fetchone()
            self._server_last = int(row[0]) if row else -1
        return self._server_last
