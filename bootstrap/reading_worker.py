"""Builds a reading worker with its pool and the processes it runs (tariff engine, detectors)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from nats.aio.client import Client as NatsClient

from bootstrap.applications import alert_desk, meter_registry, tariff_book
from bootstrap.connections import reading_pool
from config.settings import Settings
from processes.detectors import Detectors
from processes.tariff_engine import TariffEngine
from projections.reading_worker import OnCommit, ReadingWorker


def reading_worker(
    settings: Settings,
    nc: NatsClient,
    partitions: Sequence[int] | None = None,
    *,
    on_commit: OnCommit | None = None,
    ack_wait: float | None = None,
) -> ReadingWorker:
    """A reading worker on ``nc`` (all partitions by lease unless ``partitions`` are given)."""
    database = settings.database
    pool = reading_pool(database, settings.readings)
    return ReadingWorker(
        database,
        settings.nats,
        settings.readings,
        nc,
        pool,
        partitions,
        # The applications are built on first use, in a thread, and closed by their users.
        tariff_engine=TariffEngine(database, pool, functools.partial(tariff_book, database)),
        detectors=Detectors(
            database,
            settings.detectors,
            pool,
            functools.partial(alert_desk, database),
            functools.partial(meter_registry, database),
        ),
        detector_interval=settings.detectors.interval_seconds,
        on_commit=on_commit,
        ack_wait=ack_wait,
    )
