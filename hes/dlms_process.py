"""Composition of the DLMS side: collector and scheduler, push listener, command executor.

They run together in one asyncio process (``hes dlms run``; a supervised child of ``hes up``),
so that one per-meter lock covers collection and commands. The ``dlms_view`` projection runs
with the other projections (it feeds the executor's queue and the GraphQL queries).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any
from uuid import UUID

import nats
from nats.aio.client import Client as NatsClient
from psycopg_pool import AsyncConnectionPool
from rich.console import Console

from adapters.dlms.collection_store import CollectionStore
from adapters.dlms.collector import Collector
from adapters.dlms.executor import EXECUTOR, CommandExecutor
from adapters.dlms.gurux_session import GuruxSessionFactory
from adapters.dlms.key_vault import KeyCipher
from adapters.dlms.meter_access import MeterAccess
from adapters.dlms.push_layout import PushLayout
from adapters.dlms.push_listener import PushDirectory, PushListener
from adapters.dlms.reading_outlet import ReadingOutlet
from adapters.dlms.scheduler import CollectionScheduler
from adapters.dlms.session import SessionFactory
from adapters.nats.closing import drain_or_close
from adapters.nats.dead_letters import DeadLetterPublisher
from adapters.nats.reading_publisher import ReadingPublisher
from commands.context import CommandContext
from commands.meters import MeterRegistry
from domain.collection import parse_schedules
from domain.meter_events import LogEntry
from hes.dlms_keys import master_key
from hes.reading_process import WorkerProcess
from hes.settings import Settings
from hes.workers import SupervisedProjection
from projections.dlms_projection import DlmsProjection
from projections.dlms_view import DlmsView

log = logging.getLogger(__name__)


def dlms_projection(settings: Settings) -> SupervisedProjection:
    """A supervised worker for the DLMS read models (not yet started)."""
    return SupervisedProjection(
        settings,
        application_class=MeterRegistry,
        projection_class=DlmsProjection,
        view_class=DlmsView,
    )


class DlmsService:
    """Everything the DLMS process runs, over one pool, one NATS connection, one registry."""

    def __init__(self, settings: Settings, factory: SessionFactory | None = None) -> None:
        if settings.database_url is None or settings.nats_url is None:
            raise ValueError("server URLs must be resolved before starting the DLMS side")
        self.settings = settings
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            settings.database_url,
            min_size=2,
            max_size=16,
            max_idle=30,  # give surplus connections back soon (adapters/postgres_store.py)
            open=False,
            timeout=30,
            kwargs={"autocommit": True},
            check=AsyncConnectionPool.check_connection,
        )
        self.registry = MeterRegistry(env=settings.eventsourcing_env())
        self.cipher = KeyCipher(master_key(settings))
        self.store = CollectionStore(self.pool, settings.db_schema)
        self.access = MeterAccess(
            factory or GuruxSessionFactory(settings.dlms_timeout_seconds),
            self.store,
            self.pool,
            settings.db_schema,
            self.cipher,
            client_system_title=bytes.fromhex(settings.dlms_system_title),
            concurrency=settings.dlms_concurrency,
            retries=settings.dlms_retries,
        )
        self.nc: NatsClient | None = None
        self._collector: Collector | None = None
        self._listener: PushListener | None = None

    async def open(self) -> None:
        """Open the pool and the NATS connection and build the workers."""
        s = self.settings
        await self.pool.open(wait=True, timeout=30)
        assert s.nats_url is not None
        self.nc = await nats.connect(
            s.nats_url,
            name="hes-dlms",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            flush_timeout=5,
        )
        outlet = ReadingOutlet(
            ReadingPublisher(self.nc, s),
            DeadLetterPublisher(self.nc, s),
            partitions=s.reading_partitions,
            future_tolerance_seconds=s.future_tolerance_seconds,
            max_age_seconds=s.retention_raw_days * 86_400.0,
        )
        self._collector = Collector(
            self.access, outlet, self.store, self.record_events, profile_days=s.dlms_profile_days
        )
        self._listener = PushListener(
            outlet,
            DeadLetterPublisher(self.nc, s),
            PushDirectory(self.pool, s.db_schema, self.cipher),
            s.host,
            s.dlms_push_port,
            layout=PushLayout.parse(s.dlms_push_layout),
        )

    @property
    def collector(self) -> Collector:
        """The collector (after ``open``)."""
        if self._collector is None:
            raise RuntimeError("DLMS service is not open")
        return self._collector

    @property
    def listener(self) -> PushListener:
        """The push listener (after ``open``)."""
        if self._listener is None:
            raise RuntimeError("DLMS service is not open")
        return self._listener

    def scheduler(self) -> CollectionScheduler:
        """A collection scheduler with the configured schedules."""
        s = self.settings
        return CollectionScheduler(
            self.collector,
            self.store,
            parse_schedules(s.dlms_schedule, s.dlms_group_schedules),
            max_meters_in_flight=4 * s.dlms_concurrency,
        )

    def executor(self) -> CommandExecutor:
        """A remote-command executor."""
        return CommandExecutor(
            self.access,
            self.collector,
            self.registry,
            self.store,
            self.pool,
            self.settings.db_schema,
        )

    async def record_events(self, meter: UUID, entries: list[LogEntry]) -> list[LogEntry]:
        """Record event-log entries on the Meter aggregate (in a thread: the library is sync)."""
        ctx = CommandContext(actor=EXECUTOR)
        return await asyncio.to_thread(self.registry.record_log_entries, meter, entries, ctx)

    async def run(self, stop: asyncio.Event, *, listen: bool = True) -> None:
        """Run scheduler, executor and (unless ``listen`` is false) the push listener."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.scheduler().run(stop))
            group.create_task(self.executor().run(stop))
            if listen:
                group.create_task(self.listener.run(stop))

    async def close(self) -> None:
        """Close NATS, the pool and the registry."""
        if self.nc is not None:
            await drain_or_close(self.nc)
        await self.pool.close()
        await asyncio.to_thread(self.registry.close)


async def run_dlms(settings: Settings) -> None:
    """``hes dlms run``: collect, listen and execute until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    service = DlmsService(settings)
    await service.open()
    log.info(
        "DLMS side running: schedule %s, push listener %s:%d, %d sessions at most",
        settings.dlms_schedule,
        settings.host,
        settings.dlms_push_port,
        settings.dlms_concurrency,
    )
    try:
        await service.run(stop)
    finally:
        await service.close()


class DlmsWorkers:
    """What ``hes up`` starts for DLMS: the dlms_view projection and the DLMS child process."""

    def __init__(self, settings: Settings) -> None:
        master_key(settings)  # created here, before any child process races to create it
        self.settings = settings
        self.projection = dlms_projection(settings)
        self.process = WorkerProcess(settings, command=("dlms", "run"), name="DLMS workers")

    def start(self, console: Console) -> None:
        """Start the projection, and the DLMS process unless ``HES_RUN_DLMS`` is false."""
        s = self.settings
        self.projection.start()
        if s.run_dlms:
            self.process.start()
            console.print(
                f"[green]✓[/] DLMS collector, command executor and push listener "
                f"({s.host}:{s.dlms_push_port}) running"
            )
        else:
            console.print("[yellow]•[/] DLMS side not run here (HES_RUN_DLMS=false)")

    def stop(self) -> None:
        """Stop the child and the projection."""
        if self.settings.run_dlms:
            self.process.stop()
        self.projection.stop()
