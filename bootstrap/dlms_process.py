"""Composition of the DLMS side: collector and scheduler, push listener, command executor,
campaign runner.

They run together in one asyncio process (``hes dlms run``; a supervised child of ``hes up``),
so that one per-meter lock covers collection and commands. The ``dlms_view`` projection runs
with the other projections (it feeds the executor's queue and the GraphQL queries).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from typing import Any
from uuid import UUID

from nats.aio.client import Client as NatsClient
from psycopg_pool import AsyncConnectionPool

from adapters.dlms.collection_store import CollectionStore
from adapters.dlms.collector import Collector
from adapters.dlms.executor import EXECUTOR, CommandExecutor
from adapters.dlms.fleet_device import DlmsFleetDevice, FleetDevice
from adapters.dlms.gurux_session import GuruxSessionFactory
from adapters.dlms.key_vault import KeyCipher
from adapters.dlms.meter_access import MeterAccess
from adapters.dlms.model_views import ModelViews
from adapters.dlms.push_layout import PushLayout
from adapters.dlms.push_listener import PushDirectory, PushLayouts, PushListener
from adapters.dlms.reading_outlet import ReadingOutlet
from adapters.dlms.scheduler import CollectionScheduler
from adapters.dlms.session import SessionFactory
from adapters.nats.closing import drain_or_close
from adapters.nats.dead_letters import DeadLetterPublisher
from adapters.nats.reading_publisher import ReadingPublisher
from bootstrap.applications import fleet_operations, meter_registry
from bootstrap.child import PUSH_FD, inherited_push_socket, notify_ready
from bootstrap.connections import connect_nats_service, dlms_pool
from bootstrap.dlms_keys import master_key
from bootstrap.dlms_profiles import profile_catalogue
from bootstrap.ports import PortInUse, listening_socket
from bootstrap.reading_process import WorkerProcess
from bootstrap.workers import SupervisedProjection
from commands.context import CommandContext
from commands.meters import MeterRegistry
from config.settings import Settings
from domain.collection import parse_schedules
from domain.meter_events import LogEntry
from processes.campaign_runner import CampaignRunner
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

    def __init__(
        self,
        settings: Settings,
        factory: SessionFactory | None = None,
        device: FleetDevice | None = None,
    ) -> None:
        if settings.database.url is None or settings.nats.url is None:
            raise ValueError("server URLs must be resolved before starting the DLMS side")
        self.settings = settings
        self.pool: AsyncConnectionPool[Any] = dlms_pool(settings.database)
        self.registry = meter_registry(settings.database)
        self.fleet = fleet_operations(settings.database)
        self.device: FleetDevice = device or DlmsFleetDevice()
        self.cipher = KeyCipher(master_key(settings))
        self.catalogue = profile_catalogue(settings.dlms)
        self.store = CollectionStore(self.pool, settings.database.schema)
        self.views = ModelViews(self.pool, settings.database.schema)
        self.access = MeterAccess(
            factory or GuruxSessionFactory(settings.dlms.timeout_seconds),
            self.store,
            self.pool,
            settings.database.schema,
            self.cipher,
            client_system_title=bytes.fromhex(settings.dlms.system_title),
            concurrency=settings.dlms.concurrency,
            retries=settings.dlms.retries,
            catalogue=self.catalogue,
            record_resync=self.record_resync,
        )
        self.nc: NatsClient | None = None
        self._collector: Collector | None = None
        self._listener: PushListener | None = None

    async def open(self, push_socket: socket.socket | None = None) -> None:
        """Open the pool and the NATS connection and build the workers.

        ``push_socket``: a socket already listening for pushes (else host and push port).
        """
        s = self.settings
        await self.pool.open(wait=True, timeout=30)
        assert s.nats.url is not None
        self.nc = await connect_nats_service(s.nats, "hes-dlms")
        outlet = ReadingOutlet(
            ReadingPublisher(self.nc, s.nats),
            DeadLetterPublisher(self.nc, s.nats),
            partitions=s.readings.partitions,
            future_tolerance_seconds=s.readings.future_tolerance_seconds,
            max_age_seconds=s.readings.retention_raw_days * 86_400.0,
        )
        self._collector = Collector(
            self.access,
            outlet,
            self.store,
            self.record_events,
            profile_days=s.dlms.profile_days,
            views=self.views,
        )
        fleet_layout = PushLayout.parse(s.dlms.push_layout)
        self._listener = PushListener(
            outlet,
            DeadLetterPublisher(self.nc, s.nats),
            PushDirectory(
                self.pool, s.database.schema, self.cipher, PushLayouts(self.catalogue, fleet_layout)
            ),
            s.runtime.host,
            s.dlms.push_port,
            layout=fleet_layout,
            sock=push_socket,
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
            parse_schedules(s.dlms.schedule, s.dlms.group_schedules),
            max_meters_in_flight=4 * s.dlms.concurrency,
        )

    def executor(self) -> CommandExecutor:
        """A remote-command executor."""
        return CommandExecutor(
            self.access,
            self.collector,
            self.registry,
            self.store,
            self.pool,
            self.settings.database.schema,
            fleet=self.fleet,
            device=self.device,
        )

    def campaign_runner(self) -> CampaignRunner:
        """A campaign runner (it requests commands; the executor runs them)."""
        return CampaignRunner(self.fleet, self.registry, self.pool, self.settings.database.schema)

    async def record_events(self, meter: UUID, entries: list[LogEntry]) -> list[LogEntry]:
        """Record event-log entries on the Meter aggregate (in a thread: the library is sync)."""
        ctx = CommandContext(actor=EXECUTOR)
        return await asyncio.to_thread(self.registry.record_log_entries, meter, entries, ctx)

    async def record_resync(
        self, meter: UUID, key_version: int, strategy: str, previous: int, next_: int, reason: str
    ) -> None:
        """Record an invocation-counter resynchronisation on the Meter (in a thread)."""
        ctx = CommandContext(actor=EXECUTOR)
        await asyncio.to_thread(
            self.registry.record_counter_resync,
            meter,
            key_version,
            strategy,
            previous,
            next_,
            reason,
            ctx,
        )

    async def run(self, stop: asyncio.Event, *, listen: bool = True) -> None:
        """Run scheduler, executor, campaign runner and (unless ``listen`` is false) pushes."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.scheduler().run(stop))
            group.create_task(self.executor().run(stop))
            group.create_task(self.campaign_runner().run(stop))
            if listen:
                group.create_task(self.listener.run(stop))

    async def close(self) -> None:
        """Close NATS, the pool and the registry."""
        if self.nc is not None:
            await drain_or_close(self.nc)
        await self.pool.close()
        await asyncio.to_thread(self.registry.close)
        await asyncio.to_thread(self.fleet.close)


def push_socket(settings: Settings) -> tuple[bool, socket.socket | None]:
    """(listen, socket) of the push listener: the parent's socket, or bound here.

    Under ``hes up`` the parent decides (it bound the port, or could not); run on its own,
    ``hes dlms run`` binds ``HES_HOST:HES_DLMS_PUSH_PORT`` itself and fails fast when it is in
    use. ``HES_DLMS_PUSH_PORT=0`` runs without a push listener.
    """
    given, sock = inherited_push_socket()
    if given:
        return sock is not None, sock
    if settings.dlms.push_port == 0:
        return False, None
    return True, listening_socket(
        settings.runtime.host, settings.dlms.push_port, "DLMS push listener", "HES_DLMS_PUSH_PORT"
    )


async def run_dlms(settings: Settings) -> None:
    """``hes dlms run``: collect, listen and execute until SIGINT/SIGTERM."""
    listen, sock = push_socket(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    service = DlmsService(settings)
    await service.open(sock)
    where = f"{settings.runtime.host}:{settings.dlms.push_port}" if listen else "none"
    log.info(
        "DLMS side running: schedule %s, push listener %s, %d sessions at most",
        settings.dlms.schedule,
        where,
        settings.dlms.concurrency,
    )
    notify_ready()
    try:
        await service.run(stop, listen=listen)
    finally:
        await service.close()


class PushPort:
    """The DLMS push port, bound by ``hes up`` itself and lent to the DLMS child.

    Optional: when it cannot be bound, ``hes up`` runs without a push listener, says so in
    its banner, and its readiness fails with the reason until restarted with a free port
    (or with ``HES_DLMS_PUSH_PORT=0``: no listener, on purpose).
    """

    name = "dlms_push"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.socket: socket.socket | None = None
        self.error: str | None = None

    def bind(self) -> None:
        """Bind the port (or record why it could not be bound)."""
        s = self._settings
        if s.dlms.push_port == 0:
            return
        try:
            self.socket = listening_socket(
                s.runtime.host, s.dlms.push_port, "DLMS push listener", "HES_DLMS_PUSH_PORT"
            )
        except PortInUse as exc:
            self.error = str(exc)

    def child_env(self) -> dict[str, str]:
        """What the DLMS child is told: the descriptor to listen on, or -1 for none."""
        return {PUSH_FD: str(self.socket.fileno()) if self.socket is not None else "-1"}

    def health(self) -> tuple[bool, str]:
        """Listening, disabled on purpose, or not listening and why."""
        s = self._settings
        if s.dlms.push_port == 0:
            return True, "disabled (HES_DLMS_PUSH_PORT=0): pushes are not received"
        if self.socket is None:
            return False, f"not listening, pushes are refused: {self.error}"
        return True, f"listening on {s.runtime.host}:{s.dlms.push_port}"

    def close(self) -> None:
        """Close the parent's copy of the socket."""
        if self.socket is not None:
            self.socket.close()


class DlmsWorkers:
    """What ``hes up`` starts for DLMS: the dlms_view projection and the DLMS child process."""

    def __init__(self, settings: Settings) -> None:
        master_key(settings)  # created here, before any child process races to create it
        self.settings = settings
        self.projection = dlms_projection(settings)
        self.process = WorkerProcess(settings, command=("dlms", "run"), name="DLMS workers")
        self.push = PushPort(settings)

    @property
    def parts(self) -> list[WorkerProcess | PushPort]:
        """What readiness judges (nothing when the DLMS side does not run here)."""
        return [self.process, self.push] if self.settings.runtime.run_dlms else []

    def start(self) -> None:
        """Start the projection, and the DLMS process unless ``HES_RUN_DLMS`` is false."""
        self.projection.start()
        if self.settings.runtime.run_dlms:
            self.push.bind()
            if self.push.socket is not None:
                self.process.pass_fds = (self.push.socket.fileno(),)
            self.process.start(self.push.child_env())

    def stop(self) -> None:
        """Stop the child and the projection."""
        if self.settings.runtime.run_dlms:
            self.process.stop()
            self.push.close()
        self.projection.stop()
