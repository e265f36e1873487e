"""Reading workers: JetStream partitions in, time-series read models out, ack after commit."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg
from nats.aio.client import Client as NatsClient
from psycopg_pool import AsyncConnectionPool

from adapters.metrics import (
    CONSUMER_LAG,
    LATENCY_INGEST,
    LATENCY_METER,
    READINGS_DUPLICATE,
    READINGS_STORED,
    WRITE_BATCHES,
    WRITE_SECONDS,
)
from adapters.nats.dead_letters import DeadLetterPublisher
from adapters.nats.reading_consumer import ReadingConsumer
from config.settings import (
    DatabaseSettings,
    NatsSettings,
    ReadingSettings,
)
from domain.readings import MeterBatch
from projections.interval_export import export_due
from projections.partition_leases import LeaseLost, PartitionLeases
from projections.partitions import drop_expired, ensure_partitions
from projections.reading_store import ReadingStore, WriteResult

log = logging.getLogger(__name__)

OnCommit = Callable[[Sequence[MeterBatch], WriteResult, datetime], None]
LAG_INTERVAL = 5.0
RETENTION_INTERVAL = 3600.0
EXPORT_INTERVAL = 900.0
TARIFF_INTERVAL = 15.0


class RoundOfProcess(Protocol):
    """A process the worker runs every so often (the tariff engine, the detectors)."""

    async def run_once(self, now: datetime) -> Any:
        """React once to what the read models show at ``now``; return a report."""

    async def close(self) -> None:
        """Release what the process opened."""


class ReadingWorker:
    """Consumes READINGS partitions and writes each group in one transaction, ack after commit.

    Without ``partitions`` the worker shares all of them with every other worker of the schema
    through partition leases (``projections.partition_leases``) and fences each write with them;
    with ``partitions`` it consumes exactly those (tests, tools).
    """

    def __init__(
        self,
        database: DatabaseSettings,
        nats: NatsSettings,
        readings: ReadingSettings,
        nc: NatsClient,
        pool: AsyncConnectionPool[Any],
        partitions: Sequence[int] | None = None,
        *,
        tariff_engine: RoundOfProcess,
        detectors: RoundOfProcess,
        detector_interval: float,
        on_commit: OnCommit | None = None,
        ack_wait: float | None = None,
    ) -> None:
        if database.url is None:
            raise ValueError("database URL is not resolved")
        self.database, self.nats, self.readings = database, nats, readings
        self.detector_interval = detector_interval
        self.store = ReadingStore(database.schema, readings.default_region_capacity_kw * 1000)
        # Opened and closed by ``run``; the tariff engine and the detectors read through it too.
        self.pool = pool
        self.leases = (
            PartitionLeases(
                database.url,
                database.schema,
                readings.partitions,
                readings.lease_seconds,
            )
            if partitions is None
            else None
        )
        self.consumer = ReadingConsumer(
            nc,
            nats,
            readings,
            [] if partitions is None else list(partitions),
            dead_letters=DeadLetterPublisher(nc, nats),
            ack_wait=ack_wait or readings.ack_wait_seconds,
        )
        self.on_commit = on_commit
        self.nc = nc
        # Concurrent engines of other workers are safe.
        self.tariff_engine = tariff_engine
        self.detectors = detectors

    async def handle(self, batches: list[MeterBatch], partitions: Sequence[int] = ()) -> None:
        """Write one group (of ``partitions``); raising makes the consumer redeliver it later."""
        started = time.perf_counter()
        leases = self.leases
        fence = None if leases is None else functools.partial(leases.fence, partitions)
        async with self.pool.connection() as conn:
            try:
                result = await self.store.write(conn, batches, fence)
            except psycopg.Error as exc:
                if leases is not None and leases.lost(exc):
                    raise LeaseLost(str(exc)) from exc
                raise
        committed = datetime.now(UTC)
        WRITE_SECONDS.observe(time.perf_counter() - started)
        WRITE_BATCHES.inc()
        READINGS_STORED.inc(result.inserted)
        READINGS_DUPLICATE.inc(result.duplicates)
        for batch in batches:
            LATENCY_INGEST.observe(max(0.0, (committed - batch.received_at).total_seconds()))
            if batch.readings:
                newest = max(r.ts for r in batch.readings)
                LATENCY_METER.observe(max(0.0, (committed - newest).total_seconds()))
        if self.on_commit is not None:
            self.on_commit(batches, result, committed)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; keeps the lag gauge and retention going meanwhile."""
        await self.pool.open(wait=False)
        try:
            await self.consumer.ensure_consumers(range(self.readings.partitions))
            async with asyncio.TaskGroup() as group:
                housekeeping = [
                    group.create_task(self._every(LAG_INTERVAL, self._update_lag, stop)),
                    group.create_task(
                        self._every(RETENTION_INTERVAL, self.enforce_retention, stop)
                    ),
                    group.create_task(self._every(EXPORT_INTERVAL, self.export_intervals, stop)),
                    group.create_task(self._every(TARIFF_INTERVAL, self.apply_tariffs, stop)),
                    group.create_task(
                        self._every(self.detector_interval, self.run_detectors, stop)
                    ),
                ]
                # Leases are given back only after the consumer has finished its groups.
                consumed = asyncio.Event()
                leasing = (
                    group.create_task(
                        self.leases.run(self.consumer.add, self.consumer.remove, consumed)
                    )
                    if self.leases is not None
                    else None
                )
                try:
                    await self.consumer.run_groups(self.handle, stop)
                finally:
                    consumed.set()
                for task in housekeeping:
                    task.cancel()
                if leasing is not None:
                    await leasing
        finally:
            await self.tariff_engine.close()
            await self.detectors.close()
            await self.pool.close()

    async def enforce_retention(self) -> list[str]:
        """Create today's and tomorrow's partitions, drop expired ones; return those dropped."""
        today = datetime.now(UTC).date()
        async with self.pool.connection() as conn:
            # Tomorrow's partitions exist before midnight, so no write waits to create them.
            schema = self.database.schema
            await ensure_partitions(conn, schema, [today, today + timedelta(days=1)])
            dropped = await drop_expired(
                conn,
                schema,
                now=datetime.now(UTC),
                raw_days=self.readings.retention_raw_days,
                m1_days=self.readings.retention_1m_days,
                aggregate_days=self.readings.retention_aggregate_days,
            )
        if dropped:
            log.info("retention dropped partitions: %s", ", ".join(dropped))
        return dropped

    async def export_intervals(self) -> None:
        """Publish the interval exports of finished days not exported yet."""
        await export_due(
            self.pool, self.nc, self.database.schema, self.nats.prefix, now=datetime.now(UTC)
        )

    async def apply_tariffs(self) -> list[str]:
        """Price regions from their changed load windows; return the regions repriced."""
        repriced: list[str] = await self.tariff_engine.run_once(datetime.now(UTC))
        return repriced

    async def run_detectors(self, now: datetime | None = None) -> Any:
        """Raise and clear alerts from the read models (overload, comm failure, anomaly)."""
        return await self.detectors.run_once(now or datetime.now(UTC))

    async def _update_lag(self) -> None:
        CONSUMER_LAG.set(await self.consumer.lag())

    @staticmethod
    async def _every(
        seconds: float, action: Callable[[], Awaitable[object]], stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            try:
                await action()
            except Exception:
                log.exception("periodic task %s failed", getattr(action, "__name__", action))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
