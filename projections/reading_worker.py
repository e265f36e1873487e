"""Reading workers: JetStream partitions in, time-series read models out, ack after commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

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
from domain.readings import MeterBatch
from hes.settings import Settings
from projections.detectors import DetectorReport, Detectors
from projections.interval_export import export_due
from projections.partitions import drop_expired, ensure_partitions
from projections.reading_store import ReadingStore, WriteResult
from projections.tariff_engine import TariffEngine

log = logging.getLogger(__name__)

OnCommit = Callable[[Sequence[MeterBatch], WriteResult, datetime], None]
LAG_INTERVAL = 5.0
RETENTION_INTERVAL = 3600.0
EXPORT_INTERVAL = 900.0
TARIFF_INTERVAL = 15.0


class ReadingWorker:
    """Consumes READINGS partitions and writes each fetched group in one transaction."""

    def __init__(
        self,
        settings: Settings,
        nc: NatsClient,
        partitions: Sequence[int] | None = None,
        *,
        on_commit: OnCommit | None = None,
        ack_wait: float = 30.0,
    ) -> None:
        if settings.database_url is None:
            raise ValueError("database URL is not resolved")
        parts = list(partitions if partitions is not None else range(settings.reading_partitions))
        self.settings = settings
        self.store = ReadingStore(settings.db_schema, settings.default_region_capacity_kw * 1000)
        # One connection per partition task: partitions are handled concurrently.
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=len(parts),
            open=False,
            timeout=10,
            kwargs={"autocommit": True},
            check=AsyncConnectionPool.check_connection,
        )
        self.consumer = ReadingConsumer(
            nc, settings, parts, dead_letters=DeadLetterPublisher(nc, settings), ack_wait=ack_wait
        )
        self.on_commit = on_commit
        self.nc = nc
        # Builds its TariffBook on first use; concurrent engines of other workers are safe.
        self.tariff_engine = TariffEngine(settings, self.pool)
        self.detectors = Detectors(settings, self.pool)

    async def handle(self, batches: list[MeterBatch]) -> None:
        """Write one fetched group; raising makes the consumer redeliver it later."""
        started = time.perf_counter()
        async with self.pool.connection() as conn:
            result = await self.store.write(conn, batches)
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
            await self.consumer.ensure_consumers()
            async with asyncio.TaskGroup() as group:
                housekeeping = [
                    group.create_task(self._every(LAG_INTERVAL, self._update_lag, stop)),
                    group.create_task(
                        self._every(RETENTION_INTERVAL, self.enforce_retention, stop)
                    ),
                    group.create_task(self._every(EXPORT_INTERVAL, self.export_intervals, stop)),
                    group.create_task(self._every(TARIFF_INTERVAL, self.apply_tariffs, stop)),
                    group.create_task(
                        self._every(
                            self.settings.detector_interval_seconds, self.run_detectors, stop
                        )
                    ),
                ]
                await self.consumer.run(self.handle, stop)
                for task in housekeeping:
                    task.cancel()
        finally:
            await self.tariff_engine.close()
            await self.detectors.close()
            await self.pool.close()

    async def enforce_retention(self) -> list[str]:
        """Create today's and tomorrow's partitions, drop expired ones; return those dropped."""
        s = self.settings
        today = datetime.now(UTC).date()
        async with self.pool.connection() as conn:
            # Tomorrow's partitions exist before midnight, so no write waits to create them.
            await ensure_partitions(conn, s.db_schema, [today, today + timedelta(days=1)])
            dropped = await drop_expired(
                conn,
                s.db_schema,
                now=datetime.now(UTC),
                raw_days=s.retention_raw_days,
                m1_days=s.retention_1m_days,
                aggregate_days=s.retention_aggregate_days,
            )
        if dropped:
            log.info("retention dropped partitions: %s", ", ".join(dropped))
        return dropped

    async def export_intervals(self) -> None:
        """Publish the interval exports of finished days not exported yet."""
        s = self.settings
        await export_due(self.pool, self.nc, s.db_schema, s.nats_prefix, now=datetime.now(UTC))

    async def apply_tariffs(self) -> list[str]:
        """Price regions from their changed load windows; return the regions repriced."""
        return await self.tariff_engine.run_once(datetime.now(UTC))

    async def run_detectors(self, now: datetime | None = None) -> DetectorReport:
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
