"""Collection from one meter in one session: registers, load profile gaps, event logs.

Three phases keep the session short and the results safe: state is loaded from PostgreSQL
first (ledger, log positions), the session only reads, and what was read is published and
recorded afterwards in the order that survives a crash at any line — readings are acknowledged
by JetStream before the ledger says they arrived, meter events are saved on the aggregate
before the log position moves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

import msgspec

from adapters.dlms.collection_store import CollectionStore
from adapters.dlms.cosem import (
    CLOCK,
    CLOCK_OBIS,
    LOAD_PROFILE,
    PROFILE_GENERIC,
    REGISTER,
    REGISTERS,
    ScalerUnit,
    ScalingError,
    scaled,
)
from adapters.dlms.cosem_time import CosemTimeError, decode_datetime
from adapters.dlms.meter_access import MeterAccess
from adapters.dlms.reading_outlet import ReadingOutlet
from adapters.dlms.session import (
    AccessDenied,
    AttributeRef,
    CosemValue,
    LinkError,
    MeterSession,
    MeterTarget,
    SessionError,
)
from domain.collection import Task
from domain.meter_events import EVENT_LOGS, LogEntry
from domain.obis import BY_OBIS
from domain.profile_ledger import LedgerDay, check_period, missing_ranges, record_read
from domain.readings import Reading, Source

log = logging.getLogger(__name__)

RecordEvents = Callable[[UUID, list[LogEntry]], Awaitable[list[LogEntry]]]
SCALER_TTL_S = 86_400.0
THREE_PHASE_ONLY = frozenset(
    {"1.0.52.7.0.255", "1.0.72.7.0.255", "1.0.51.7.0.255", "1.0.71.7.0.255"}
)
MAX_RANGES_PER_SESSION = 8


def as_datetime(value: CosemValue, what: str) -> datetime:
    """A date-time attribute (octet-string(12) or a decoded date-time) as aware UTC."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bytes):
        try:
            return decode_datetime(value)
        except CosemTimeError as exc:
            raise LinkError(f"{what}: {exc}") from None
    raise LinkError(f"{what} is not a date-time")


class TaskOutcome(msgspec.Struct, frozen=True):
    """How one task went: ``error`` None when it succeeded.

    ``denied`` marks a refusal by the meter for this association (e.g. the public client may
    not read event logs): retrying sooner would not help, the task keeps its normal schedule.
    """

    error: str | None = None
    denied: bool = False

    @property
    def ok(self) -> bool:
        """True when the task succeeded."""
        return self.error is None


OK = TaskOutcome()


@dataclass
class ProfileLayout:
    """A profile's capture period and which column is the clock and which are quantities."""

    period_s: int
    clock_column: int
    columns: dict[int, str]
    """Column index → OBIS of a register the head-end knows."""


@dataclass
class Collected:
    """What one session read, before it is published or recorded."""

    meter_time: datetime | None = None
    registers: list[Reading] = field(default_factory=list)
    profile: list[Reading] = field(default_factory=list)
    profile_reads: list[tuple[tuple[datetime, datetime], list[datetime]]] = field(
        default_factory=list
    )
    profile_period: int | None = None
    events: dict[str, list[LogEntry]] = field(default_factory=dict)
    errors: dict[Task, TaskOutcome] = field(default_factory=dict)


class Collector:
    """Reads meters and feeds the reading pipeline and the Meter aggregates."""

    def __init__(
        self,
        access: MeterAccess,
        outlet: ReadingOutlet,
        store: CollectionStore,
        record_events: RecordEvents,
        *,
        profile_days: int,
    ) -> None:
        self.access = access
        self.outlet = outlet
        self.store = store
        self.record_events = record_events
        self.profile_days = profile_days
        self._scalers: dict[tuple[UUID, str], tuple[float, ScalerUnit]] = {}
        self._layouts: dict[UUID, ProfileLayout] = {}

    # -- one meter -----------------------------------------------------------------------

    async def collect(self, target: MeterTarget, tasks: set[Task]) -> dict[Task, TaskOutcome]:
        """Run ``tasks`` against the meter in one session; how each task went.

        A failure of the whole session (unreachable, refused, counter rejected) is raised.
        """
        now = datetime.now(UTC)
        horizon = now - timedelta(days=self.profile_days)
        ledger = (
            await self.store.ledger(target.id, LOAD_PROFILE, horizon.date())
            if Task.PROFILE in tasks
            else {}
        )
        positions = await self.store.log_positions(target.id) if Task.EVENTS in tasks else {}

        async def job(session: MeterSession) -> Collected:
            return await self._read(session, target, tasks, now, horizon, ledger, positions)

        collected = await self.access.run(target, job)
        return await self._deliver(target, tasks, collected, now, ledger)

    async def _read(
        self,
        session: MeterSession,
        target: MeterTarget,
        tasks: set[Task],
        now: datetime,
        horizon: datetime,
        ledger: dict[date, LedgerDay],
        positions: dict[str, datetime],
    ) -> Collected:
        out = Collected()
        if Task.REGISTERS in tasks:
            try:
                out.meter_time, out.registers = await self.read_registers(
                    session, target, self.register_set(target)
                )
            except (AccessDenied, ScalingError) as exc:
                out.errors[Task.REGISTERS] = _failed(exc)
        if Task.PROFILE in tasks:
            try:
                await self._read_profile(session, target, now, horizon, ledger, out)
            except (AccessDenied, ScalingError) as exc:
                out.errors[Task.PROFILE] = _failed(exc)
        if Task.EVENTS in tasks:
            for log_obis in EVENT_LOGS:
                start = positions.get(log_obis, horizon)
                try:
                    rows = await session.get_range(log_obis, start, now)
                except AccessDenied as exc:
                    out.errors.setdefault(Task.EVENTS, _failed(exc))
                    continue
                out.events[log_obis] = _log_entries(log_obis, rows, target.serial)
        return out

    async def _deliver(
        self,
        target: MeterTarget,
        tasks: set[Task],
        collected: Collected,
        now: datetime,
        ledger: dict[date, LedgerDay],
    ) -> dict[Task, TaskOutcome]:
        outcome = {task: collected.errors.get(task, OK) for task in tasks}
        readings = collected.registers + collected.profile
        if readings:
            await self.outlet.publish(target, readings, Source.DLMS_PULL)
        if collected.profile_period is not None:
            period = collected.profile_period
            settle = now - timedelta(seconds=2 * period)
            changed: set[date] = set()
            for requested, received in collected.profile_reads:
                changed |= record_read(ledger, period, requested, received, settle)
            await self.store.save_ledger(target.id, LOAD_PROFILE, [ledger[d] for d in changed])
        for log_obis, entries in collected.events.items():
            if entries:
                await self.record_events(target.id, entries)
                await self.store.advance_log(target.id, log_obis, max(e.at for e in entries))
        return outcome

    # -- registers -----------------------------------------------------------------------

    @staticmethod
    def register_set(target: MeterTarget) -> list[str]:
        """The registers of a full read of this meter (single-phase meters have L1 only)."""
        return [o for o in REGISTERS if target.phases == 3 or o not in THREE_PHASE_ONLY]

    async def read_registers(
        self, session: MeterSession, target: MeterTarget, codes: Sequence[str]
    ) -> tuple[datetime, list[Reading]]:
        """Read the clock and ``codes`` (value, and scaler/unit when not cached)."""
        wanted_scalers = [o for o in codes if not self._fresh_scaler(target.id, o)]
        refs = [AttributeRef(CLOCK, CLOCK_OBIS, 2)]
        refs += [AttributeRef(REGISTER, o, 2) for o in codes]
        refs += [AttributeRef(REGISTER, o, 3) for o in wanted_scalers]
        values = await session.get_many(refs)
        clock = values[0]
        if isinstance(clock, SessionError):
            raise clock
        at = as_datetime(clock, f"meter {target.serial} clock").replace(microsecond=0)
        for obis, value in zip(wanted_scalers, values[1 + len(codes) :], strict=True):
            if isinstance(value, SessionError):
                continue
            self._scalers[(target.id, obis)] = (time.monotonic(), ScalerUnit.parse(value, obis))
        readings: list[Reading] = []
        denied: list[str] = []
        for obis, value in zip(codes, values[1 : 1 + len(codes)], strict=True):
            cached = self._scalers.get((target.id, obis))
            if isinstance(value, SessionError) or cached is None:
                denied.append(obis)
                continue
            quantity, number = scaled(obis, value, cached[1])
            readings.append(Reading(quantity.id, at, number))
        if denied and not readings:
            raise AccessDenied(f"meter {target.serial} refused every register read")
        return at, readings

    def _fresh_scaler(self, meter: UUID, obis: str) -> bool:
        cached = self._scalers.get((meter, obis))
        return cached is not None and time.monotonic() - cached[0] < SCALER_TTL_S

    # -- load profile --------------------------------------------------------------------

    async def _layout(self, session: MeterSession, target: MeterTarget) -> ProfileLayout:
        layout = self._layouts.get(target.id)
        if layout is not None:
            return layout
        captures, period = await session.get_many(
            [
                AttributeRef(PROFILE_GENERIC, LOAD_PROFILE, 3),
                AttributeRef(PROFILE_GENERIC, LOAD_PROFILE, 4),
            ]
        )
        if isinstance(captures, SessionError):
            raise captures
        if isinstance(period, SessionError):
            raise period
        if isinstance(period, bool) or not isinstance(period, int):
            raise LinkError(f"meter {target.serial} load profile capture period is not an integer")
        try:
            check_period(period)
        except ValueError as exc:
            raise ScalingError(f"meter {target.serial}: {exc}") from None
        clock_column: int | None = None
        columns: dict[int, str] = {}
        for index, capture in enumerate(captures if isinstance(captures, list) else []):
            if not isinstance(capture, list) or len(capture) < 3:
                raise LinkError(f"meter {target.serial} sent a malformed capture object")
            class_id, ln, attribute = capture[0], capture[1], capture[2]
            obis = ".".join(str(b) for b in ln) if isinstance(ln, bytes) and len(ln) == 6 else ""
            if class_id == CLOCK and obis == CLOCK_OBIS and attribute == 2:
                clock_column = index
            elif class_id == REGISTER and attribute == 2 and obis in BY_OBIS:
                columns[index] = obis
        if clock_column is None:
            raise ScalingError(f"meter {target.serial} load profile has no clock column")
        layout = ProfileLayout(period_s=period, clock_column=clock_column, columns=columns)
        self._layouts[target.id] = layout
        return layout

    async def _read_profile(
        self,
        session: MeterSession,
        target: MeterTarget,
        now: datetime,
        horizon: datetime,
        ledger: dict[date, LedgerDay],
        out: Collected,
    ) -> None:
        layout = await self._layout(session, target)
        missing_scalers = [
            o for o in layout.columns.values() if not self._fresh_scaler(target.id, o)
        ]
        if missing_scalers:
            values = await session.get_many([AttributeRef(REGISTER, o, 3) for o in missing_scalers])
            for obis, value in zip(missing_scalers, values, strict=True):
                if isinstance(value, SessionError):
                    raise value
                self._scalers[(target.id, obis)] = (time.monotonic(), ScalerUnit.parse(value, obis))
        ranges = missing_ranges(
            ledger, horizon, now, layout.period_s, max_ranges=MAX_RANGES_PER_SESSION
        )
        out.profile_period = layout.period_s
        for start, end in ranges:
            rows = await session.get_range(LOAD_PROFILE, start, end)
            received: list[datetime] = []
            for row in rows:
                if len(row) <= max([layout.clock_column, *layout.columns]):
                    raise LinkError(f"meter {target.serial} sent a short load profile row")
                at = as_datetime(row[layout.clock_column], f"meter {target.serial} profile row")
                if not start <= at <= end:
                    continue  # outside the asked range: meters with range bugs, ignore
                received.append(at)
                for column, obis in layout.columns.items():
                    quantity, number = scaled(
                        obis, row[column], self._scalers[(target.id, obis)][1]
                    )
                    out.profile.append(Reading(quantity.id, at, number))
            out.profile_reads.append(((start, end), received))


def _failed(exc: Exception) -> TaskOutcome:
    if isinstance(exc, AccessDenied):
        return TaskOutcome(error=exc.message, denied=True)
    return TaskOutcome(error=str(exc))


def _log_entries(log_obis: str, rows: list[list[CosemValue]], serial: str) -> list[LogEntry]:
    entries: list[LogEntry] = []
    for row in rows:
        if len(row) < 2 or isinstance(row[1], bool) or not isinstance(row[1], int):
            raise LinkError(f"meter {serial} sent a malformed {log_obis} entry")
        entries.append(
            LogEntry(log=log_obis, code=row[1], at=as_datetime(row[0], f"meter {serial} event"))
        )
    return entries
