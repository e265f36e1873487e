"""Partition leases of the reading workers, in PostgreSQL: one owner per partition, fenced.

Any number of ``hes workers run`` processes, on any number of machines, share the READINGS
partitions. Each holds leases on about ``partitions / live workers`` of them and consumes only
those; every second (or third of ``HES_READING_LEASE_SECONDS``, if shorter) it renews them,
gives extras back when more workers joined, and takes free or expired ones when fewer are left.

- A lease is free when nobody holds it, when it was not renewed in time (a stalled worker), or
  when its holder's PostgreSQL session is gone (a worker that died: its connection closed, so
  the lease is taken over at the next tick instead of after the whole lease time).
- Every acquisition raises the lease's ``epoch``. Each write transaction first locks its
  partitions' lease rows (``FOR KEY SHARE``) and checks that it still holds them at the epoch it
  acquired (``fence``); a takeover locks the row ``FOR UPDATE``, so it waits for a write in
  flight, and a worker that was paused past its lease finds the epoch moved and writes nothing.
  (Duplicates would be harmless anyway: the store drops readings it already holds.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

OnChange = Callable[[int], Awaitable[None]]


def _alive(alias: str) -> sql.Composed:
    """A session is alive while a backend with its pid and start time exists."""
    return sql.SQL(
        "EXISTS (SELECT 1 FROM pg_stat_activity a "
        "WHERE a.pid = {t}.backend_pid AND a.backend_start = {t}.backend_start)"
    ).format(t=sql.Identifier(alias))


_SEED = """
INSERT INTO {schema}.reading_leases (partition)
SELECT generate_series(0, %(partitions)s - 1)
ON CONFLICT (partition) DO NOTHING
"""

_HEARTBEAT = """
INSERT INTO {schema}.reading_workers AS w (worker, host, pid, backend_pid, backend_start, seen_at)
SELECT %(me)s, %(host)s, %(pid)s, a.pid, a.backend_start, now()
FROM pg_stat_activity a WHERE a.pid = pg_backend_pid()
ON CONFLICT (worker) DO UPDATE SET backend_pid = EXCLUDED.backend_pid,
    backend_start = EXCLUDED.backend_start, seen_at = EXCLUDED.seen_at
"""

_LIVE_WORKERS = """
SELECT count(*) FROM {schema}.reading_workers w
WHERE w.seen_at > now() - %(ttl)s * interval '1 second' AND {alive_w}
"""

_FORGET_WORKERS = """
DELETE FROM {schema}.reading_workers
WHERE seen_at < now() - 10 * %(ttl)s * interval '1 second'
"""

_RENEW = """
UPDATE {schema}.reading_leases l
SET expires_at = now() + %(ttl)s * interval '1 second',
    backend_pid = pg_backend_pid(),
    backend_start = (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())
WHERE owner = %(me)s AND partition < %(partitions)s
RETURNING partition, epoch
"""

_ACQUIRE = """
WITH free AS (
    SELECT partition FROM {schema}.reading_leases l
    WHERE partition < %(partitions)s
        AND (owner IS NULL OR expires_at < now() OR NOT {alive_l})
    ORDER BY partition
    LIMIT %(wanted)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.reading_leases l
SET owner = %(me)s, epoch = l.epoch + 1,
    expires_at = now() + %(ttl)s * interval '1 second',
    backend_pid = pg_backend_pid(),
    backend_start = (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())
FROM free WHERE l.partition = free.partition
RETURNING l.partition, l.epoch
"""

_RELEASE = """
UPDATE {schema}.reading_leases SET owner = NULL, expires_at = '-infinity'
WHERE partition = %(partition)s AND owner = %(me)s AND epoch = %(epoch)s
"""

# Run first in a write transaction: locks the lease rows until the commit (a takeover waits),
# and stops the write unless every one is still this worker's at the epoch it took.
_FENCE = """
DO $hes_fence$ BEGIN
    IF (SELECT count(*) FROM (
            SELECT 1 FROM {schema}.reading_leases
            WHERE owner = {me} AND (partition, epoch) IN ({pairs})
            FOR KEY SHARE) held) <> {count} THEN
        RAISE EXCEPTION 'hes: partition lease lost (partitions {partitions})';
    END IF;
END $hes_fence$
"""


class LeaseLost(RuntimeError):
    """This worker no longer holds a partition it was about to write (another one took it)."""


class PartitionLeases:
    """This worker's leases on the READINGS partitions of one schema."""

    def __init__(
        self,
        database_url: str,
        schema: str,
        partitions: int,
        lease_seconds: float,
        *,
        worker: str | None = None,
    ) -> None:
        self._url = database_url
        self._schema = sql.Identifier(schema)
        self.partitions = partitions
        self.lease_seconds = lease_seconds
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.held: dict[int, int] = {}
        """Partition -> epoch of each lease this worker holds."""
        self._conn: psycopg.AsyncConnection[Any] | None = None

    @property
    def tick_seconds(self) -> float:
        """Time between ticks: a third of the lease, at most a second (to rebalance quickly)."""
        return min(1.0, self.lease_seconds / 3)

    def _sql(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(schema=self._schema, alive_w=_alive("w"), alive_l=_alive("l"))

    async def run(self, on_gain: OnChange, on_loss: OnChange, stop: asyncio.Event) -> None:
        """Hold a fair share of the partitions until ``stop``; then give every lease back."""
        failures = 0
        try:
            while not stop.is_set():
                try:
                    await self.tick(on_gain, on_loss)
                    failures = 0
                except Exception:
                    failures += 1
                    log.warning(
                        "partition leases: tick failed (%d in a row)", failures, exc_info=True
                    )
                    await self._disconnect()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.tick_seconds)
        finally:
            for partition in sorted(self.held):
                with contextlib.suppress(Exception):
                    await on_loss(partition)
            with contextlib.suppress(Exception):
                await self.release_all()
            await self._disconnect()

    async def tick(self, on_gain: OnChange, on_loss: OnChange) -> None:
        """Renew, then give back or take leases until this worker holds its fair share."""
        conn = await self._connection()
        params = self._params()
        await conn.execute(self._sql(_HEARTBEAT), params)
        cur = await conn.execute(self._sql(_RENEW), params)
        renewed = {int(p): int(e) for p, e in await cur.fetchall()}
        for partition in sorted(set(self.held) - set(renewed)):
            log.warning("partition %d: lease lost to another worker", partition)
            self.held.pop(partition, None)
            await on_loss(partition)
        for partition in sorted(set(renewed) - set(self.held)):
            # Held in the table but unknown here (a tick that failed after taking it).
            self.held[partition] = renewed[partition]
            await on_gain(partition)
        live = await self._scalar(conn, _LIVE_WORKERS, params)
        share = math.ceil(self.partitions / max(1, live))
        if len(self.held) > share:
            for partition in sorted(self.held)[share:]:
                await on_loss(partition)
                await self._release(conn, partition)
        elif len(self.held) < share:
            cur = await conn.execute(
                self._sql(_ACQUIRE), {**params, "wanted": share - len(self.held)}
            )
            for partition, epoch in sorted(await cur.fetchall()):
                self.held[int(partition)] = int(epoch)
                log.info("partition %d: lease taken (epoch %d)", partition, epoch)
                await on_gain(int(partition))
        await conn.execute(self._sql(_FORGET_WORKERS), params)

    def fence(self, partitions: Iterable[int]) -> sql.Composed:
        """SQL for the start of a write of ``partitions``: fails unless this worker holds them.

        Raises ``LeaseLost`` at once for a partition this worker does not believe it holds.
        """
        wanted = sorted(set(partitions))
        missing = [p for p in wanted if p not in self.held]
        if missing or not wanted:
            raise LeaseLost(f"partitions {missing or wanted}: not held by this worker")
        return sql.SQL(_FENCE).format(
            schema=self._schema,
            me=sql.Literal(self.worker),
            pairs=sql.SQL("VALUES {}").format(
                sql.SQL(", ").join(
                    sql.SQL("({}::integer, {}::bigint)").format(
                        sql.Literal(p), sql.Literal(self.held[p])
                    )
                    for p in wanted
                )
            ),
            count=sql.Literal(len(wanted)),
            partitions=sql.SQL(" ".join(str(p) for p in wanted)),
        )

    @staticmethod
    def lost(error: BaseException) -> bool:
        """True when ``error`` is a write stopped by ``fence``."""
        return isinstance(error, psycopg.errors.RaiseException) and "lease lost" in str(error)

    async def release_all(self) -> None:
        """Give every held lease back (a clean shutdown: the next owner need not wait)."""
        if not self.held:
            return
        conn = await self._connection()
        for partition in sorted(self.held):
            await self._release(conn, partition)

    async def _release(self, conn: psycopg.AsyncConnection[Any], partition: int) -> None:
        epoch = self.held.pop(partition, None)
        if epoch is None:
            return
        await conn.execute(
            self._sql(_RELEASE), {"partition": partition, "me": self.worker, "epoch": epoch}
        )
        log.info("partition %d: lease given back", partition)

    def _params(self) -> dict[str, Any]:
        return {
            "me": self.worker,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "ttl": self.lease_seconds,
            "partitions": self.partitions,
        }

    async def _scalar(
        self, conn: psycopg.AsyncConnection[Any], text: str, params: dict[str, Any]
    ) -> int:
        cur = await conn.execute(self._sql(text), params)
        row = await cur.fetchone()
        return int(row[0]) if row is not None else 0

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=10
            )
            params = self._params()
            await self._conn.execute(self._sql(_SEED), params)
        return self._conn

    async def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
