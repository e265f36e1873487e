"""Collection from one meter in one session: registers, load profile gaps, event logs.

Three phases keep the session short and the results safe: state is loaded from PostgreSQL
first (ledger, log positions, the model's association view), the session only reads, and what
was read is published and recorded afterwards in the order that survives a crash at any line —
readings are acknowledged by JetStream before the ledger says they arrived, meter events are
saved on the aggregate before the log position moves.

Reads are planned from the meter model's association view (read in the first session with a
meter of a model not seen before): objects the model lacks or denies to the client are not
asked for. Each register, log and profile stands on its own: what can be stored is stored (a
register in an unknown unit with the ``UNIT_UNVERIFIED`` flag), what cannot is listed per OBIS
code with its reason, and the task is PARTIAL rather than failed.
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
    ASSOCIATION_CLASS,
    ASSOCIATION_LN,
    CLOCK,
    CLOCK_OBIS,
    LOAD_PROFILE,
    OBJECT_LIST,
    PROFILE_GENERIC,
    REGISTER,
    ScalerUnit,
    Scaling,
    ScalingError,
    UnitMismatch,
)
from adapters.dlms.cosem_time import CosemTimeError, decode_datetime
from adapters.dlms.meter_access import MeterAccess
from adapters.dlms.model_views import ModelKey, ModelViews, StoredView, model_key
from adapters.dlms.reading_outlet import ReadingOutlet
from adapters.dlms.session import (
    AccessDenied,
    AttributeRef,
    CosemValue,
    DataAccessError,
    LinkError,
    MeterSession,
    MeterTarget,
    ObjectMissing,
    SessionError,
)
from domain.association_view import AssociationView, ViewError, parse_object_list
from domain.collection import Task
from domain.meter_events import LogEntry, MeterEventKind
from domain.obis import BY_OBIS
from domain.profile_ledger import LedgerDay, check_period, missing_ranges, record_read
from domain.read_plan import ReadPlan, Step, plan_reads, register_codes
from domain.readings import Reading, Source

log = logging.getLogger(__name__)

RecordEvents = Callable[[UUID, list[LogEntry]], Awaitable[list[LogEntry]]]
SCALER_TTL_S = 86_400.0
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


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """Something of a task that was not read as asked, per OBIS code, and why.

    ``stored`` is true when the value was stored all the same, flagged (unknown unit).
    """

    step: str
    obis: str
    reason: str
    stored: bool = False


class TaskOutcome(msgspec.Struct, frozen=True):
    """How one task went: ``error`` None when it succeeded (``problems`` may still list what
    was skipped or refused: then it is PARTIAL).

    ``denied`` marks a refusal by the meter for this association (e.g. the public client may
    not read event logs): retrying sooner would not help, the task keeps its normal schedule.
    """

    error: str | None = None
    denied: bool = False
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the task succeeded (fully or partially)."""
        return self.error is None

    @property
    def status(self) -> str:
        """``OK``, ``PARTIAL`` (something not stored) or ``FAILED``."""
        if self.error is not None:
            return "FAILED"
        return "PARTIAL" if any(not p.stored for p in self.problems) else "OK"


OK = TaskOutcome()


@dataclass
class ProfileLayout:
    """A profile's capture period and which column is the clock and which are quantities."""

    period_s: int
    clock_column: int
    columns: dict[int, str]
    """Column index → OBIS of a register the head-end knows."""


UnitRow = tuple[str, int | None, int | None, bool, str | None]
"""(OBIS, scaler, unit code, verified, note) of a register's scaler_unit as read."""


@dataclass
class RegisterRead:
    """A register read: the meter's time, the readings and what could not be stored."""

    at: datetime
    readings: list[Reading]
    problems: list[Problem]
    units: list[UnitRow] = field(default_factory=list)
    """Scaler_units read in this session."""
    refused: int = 0
    """Problems that are the meter refusing the client (denied, missing), not faults."""


@dataclass
class Collected:
    """What one session read, before it is published or recorded."""

    plan: ReadPlan | None = None
    meter_time: datetime | None = None
    registers: list[Reading] = field(default_factory=list)
    units: list[UnitRow] = field(default_factory=list)
    profile: list[Reading] = field(default_factory=list)
    profile_reads: list[tuple[tuple[datetime, datetime], list[datetime]]] = field(
        default_factory=list
    )
    profile_period: int | None = None
    events: dict[str, list[LogEntry]] = field(default_factory=dict)
    errors: dict[Task, TaskOutcome] = field(default_factory=dict)
    problems: dict[Task, list[Problem]] = field(default_factory=dict)

    def problem(self, task: Task, obis: str, reason: str, stored: bool = False) -> None:
        """Note what of ``task`` was not read (or stored flagged)."""
        self.problems.setdefault(task, []).append(
            Problem(step=task.value, obis=obis, reason=reason, stored=stored)
        )


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
        views: ModelViews | None = None,
    ) -> None:
        self.access = access
        self.outlet = outlet
        self.store = store
        self.record_events = record_events
        self.profile_days = profile_days
        self.views = views or ModelViews(store.pool, store.schema_name)
        self._scalers: dict[tuple[UUID, str], tuple[float, Scaling]] = {}
        self._mismatch: dict[tuple[UUID, str], str] = {}
        """Registers whose unit is another Blue Book unit than the catalogue's, and why."""
        self._layouts: dict[UUID, ProfileLayout] = {}
        self._plans: dict[tuple[ModelKey, str, int], tuple[AssociationView | None, ReadPlan]] = {}

    # -- plans ---------------------------------------------------------------------------

    def plan(self, target: MeterTarget, view: AssociationView | None) -> ReadPlan:
        """The meter's read plan from its model's view (cached per model and view)."""
        profile = self.access.profile_of(target)
        client = self.access.client_of(target)
        key = (model_key(target, client), profile.name, target.phases)
        cached = self._plans.get(key)
        if cached is not None and cached[0] is view:
            return cached[1]
        made = plan_reads(view, profile, target.phases, client)
        self._plans[key] = (view, made)
        return made

    async def plan_for(self, target: MeterTarget) -> ReadPlan:
        """The meter's plan from the stored view of its model (no discovery)."""
        stored = await self.views.get(model_key(target, self.access.client_of(target)))
        return self.plan(target, stored.view if stored is not None else None)

    async def discover(self, session: MeterSession, target: MeterTarget) -> StoredView:
        """Read the association view in ``session`` and keep it for the meter's model."""
        key = model_key(target, self.access.client_of(target))
        try:
            value = await session.get(AttributeRef(ASSOCIATION_CLASS, ASSOCIATION_LN, OBJECT_LIST))
            view = parse_object_list(value, version=0)
        except DataAccessError as exc:
            log.info("meter %s: no association view: %s", target.serial, exc.message)
            return await self.views.put(key, target, None, exc.message)
        except ViewError as exc:
            message = f"meter {target.serial} sent an association view that is malformed: {exc}"
            log.warning("%s", message)
            return await self.views.put(key, target, None, message)
        own = view.find(ASSOCIATION_LN)
        version = own.version if own is not None and own.class_id == ASSOCIATION_CLASS else 1
        view = AssociationView(version=version, objects=view.objects)
        log.info(
            "meter %s: association view of %s %s %s for client %d: %d objects",
            target.serial,
            target.manufacturer,
            target.model,
            target.firmware,
            key[3],
            len(view.objects),
        )
        return await self.views.put(key, target, view)

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
        key = model_key(target, self.access.client_of(target))

        async def job(session: MeterSession) -> Collected:
            known = await self.views.get(key)
            if (known is None or known.due) and self.views.claim_discovery(key):
                # One session per model reads the view; the others read unplanned meanwhile.
                try:
                    known = await self.discover(session, target)
                finally:
                    self.views.release_discovery(key)
            out = Collected(plan=self.plan(target, known.view if known is not None else None))
            return await self._read(session, target, tasks, now, horizon, ledger, positions, out)

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
        out: Collected,
    ) -> Collected:
        assert out.plan is not None
        if Task.REGISTERS in tasks:
            try:
                read = await self.read_registers(
                    session, target, self.register_set(target), out.plan
                )
            except DataAccessError as exc:
                out.problem(Task.REGISTERS, CLOCK_OBIS, exc.message)
                out.errors[Task.REGISTERS] = _failed(exc)
            else:
                out.meter_time, out.registers, out.units = read.at, read.readings, read.units
                for p in read.problems:
                    out.problem(Task.REGISTERS, p.obis, p.reason, p.stored)
                if not read.readings and read.problems:
                    out.errors[Task.REGISTERS] = _nothing_read(
                        "register", read.problems, denied=read.refused == len(read.problems)
                    )
        if Task.PROFILE in tasks:
            skipped = out.plan.skipped(Step.PROFILE)
            if skipped:
                for item in skipped:
                    out.problem(Task.PROFILE, item.obis, item.reason or item.status.value)
            else:
                try:
                    await self._read_profile(session, target, now, horizon, ledger, out)
                except (DataAccessError, ScalingError) as exc:
                    reason = exc.message if isinstance(exc, DataAccessError) else str(exc)
                    out.problem(Task.PROFILE, LOAD_PROFILE, reason)
                    out.errors[Task.PROFILE] = _failed(exc)
        if Task.EVENTS in tasks:
            await self._read_events(session, target, now, horizon, positions, out)
        return out

    async def _read_events(
        self,
        session: MeterSession,
        target: MeterTarget,
        now: datetime,
        horizon: datetime,
        positions: dict[str, datetime],
        out: Collected,
    ) -> None:
        assert out.plan is not None
        profile = self.access.profile_of(target)
        table = self.access.catalogue.event_table(profile)
        refused: list[Problem] = []
        denied = True  # every log refused for this client (or absent): not worth retrying soon
        for log_obis in profile.events.logs:
            if not out.plan.asked(log_obis, 2):
                item = out.plan.item(log_obis, attribute=2)
                reason = (item.reason if item else None) or "not in the plan"
                refused.append(Problem(step=Task.EVENTS.value, obis=log_obis, reason=reason))
                continue
            start = positions.get(log_obis, horizon)
            try:
                rows = await session.get_range(log_obis, start, now)
            except DataAccessError as exc:
                refused.append(Problem(step=Task.EVENTS.value, obis=log_obis, reason=exc.message))
                denied = denied and isinstance(exc, AccessDenied | ObjectMissing)
                continue
            out.events[log_obis] = _log_entries(log_obis, rows, target.serial, table)
        out.problems.setdefault(Task.EVENTS, []).extend(refused)
        if refused and not out.events:
            out.errors[Task.EVENTS] = _nothing_read("event log", refused, denied=denied)

    async def _deliver(
        self,
        target: MeterTarget,
        tasks: set[Task],
        collected: Collected,
        now: datetime,
        ledger: dict[date, LedgerDay],
    ) -> dict[Task, TaskOutcome]:
        outcome = {
            task: msgspec.structs.replace(
                collected.errors.get(task, OK),
                problems=tuple(collected.problems.get(task, ())),
            )
            for task in tasks
        }
        readings = collected.registers + collected.profile
        if readings:
            await self.outlet.publish(target, readings, Source.DLMS_PULL)
        await self.store.save_register_units(target.id, collected.units)
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
        return register_codes(target.phases)

    async def read_registers(
        self,
        session: MeterSession,
        target: MeterTarget,
        codes: Sequence[str],
        plan: ReadPlan | None = None,
    ) -> RegisterRead:
        """Read the clock and ``codes`` (value, and scaler/unit when not cached), each on its
        own: what cannot be read or scaled is listed by OBIS code with the reason."""
        problems: list[Problem] = []
        refused = 0
        step = Task.REGISTERS.value
        wanted: list[str] = []
        for obis in codes:
            item = plan.item(obis, attribute=2) if plan is not None else None
            if item is not None and not item.asked:
                problems.append(Problem(step=step, obis=obis, reason=item.reason or "skipped"))
                refused += 1
            else:
                wanted.append(obis)
        no_scaler = {
            o for o in wanted if plan is not None and not plan.asked(o, 3)
        }  # the view denies scaler_unit: values are stored raw, flagged
        scalers = [o for o in wanted if o not in no_scaler and not self._fresh_scaler(target.id, o)]
        refs = [AttributeRef(CLOCK, CLOCK_OBIS, 2)]
        refs += [AttributeRef(REGISTER, o, 2) for o in wanted]
        refs += [AttributeRef(REGISTER, o, 3) for o in scalers]
        values = await session.get_many(refs)
        clock = values[0]
        if isinstance(clock, SessionError):
            raise DataAccessError(
                f"meter {target.serial}, registers: clock {CLOCK_OBIS}: {clock.message}"
            )
        at = as_datetime(clock, f"meter {target.serial} clock").replace(microsecond=0)
        units: list[UnitRow] = []
        for obis, value in zip(scalers, values[1 + len(wanted) :], strict=True):
            units.append(self._learn_scaler(target, obis, value))
        for obis in no_scaler:
            self._scalers[(target.id, obis)] = (time.monotonic(), Scaling.unverified(obis))
            units.append((obis, None, None, False, "scaler_unit not readable by this client"))
        readings: list[Reading] = []
        for obis, value in zip(wanted, values[1 : 1 + len(wanted)], strict=True):
            if isinstance(value, SessionError):
                problems.append(Problem(step=step, obis=obis, reason=value.message))
                refused += isinstance(value, AccessDenied | ObjectMissing)
                continue
            cached = self._scalers.get((target.id, obis))
            if cached is None:  # another Blue Book unit than the catalogue's: not this quantity
                reason = self._mismatch.get((target.id, obis), "no scaler_unit")
                problems.append(
                    Problem(step=step, obis=obis, reason=f"meter {target.serial}: {reason}")
                )
                continue
            scaling = cached[1]
            try:
                number = scaling.apply(value)
            except ScalingError as exc:
                problems.append(
                    Problem(step=step, obis=obis, reason=f"meter {target.serial}: {exc}")
                )
                continue
            if scaling.quality:
                problems.append(
                    Problem(
                        step=step,
                        obis=obis,
                        reason=self._unverified_reason(target, obis),
                        stored=True,
                    )
                )
            readings.append(Reading(scaling.quantity.id, at, number, scaling.quality))
        return RegisterRead(at, readings, problems, units, refused)

    def _learn_scaler(
        self, target: MeterTarget, obis: str, value: CosemValue | SessionError
    ) -> UnitRow:
        """Cache the scaling of ``obis`` from its scaler_unit; the row kept in the store."""
        scaling: Scaling | None = None
        row: UnitRow
        if isinstance(value, SessionError):
            scaling, row = Scaling.unverified(obis), (obis, None, None, False, value.message)
        else:
            try:
                scaler_unit = ScalerUnit.parse(value, obis)
            except ScalingError as exc:
                scaling, row = Scaling.unverified(obis), (obis, None, None, False, str(exc))
            else:
                row = (obis, scaler_unit.scaler, scaler_unit.unit, True, None)
                try:
                    scaling = Scaling.of(obis, scaler_unit)
                except UnitMismatch as exc:
                    row = (obis, scaler_unit.scaler, scaler_unit.unit, False, str(exc))
                    scaling = None
                else:
                    if scaling.quality:
                        note = f"unit code {scaler_unit.unit} is not a Blue Book unit"
                        row = (obis, scaler_unit.scaler, scaler_unit.unit, False, note)
        if scaling is None:
            self._scalers.pop((target.id, obis), None)
            self._mismatch[(target.id, obis)] = row[4] or "unit mismatch"
        else:
            self._scalers[(target.id, obis)] = (time.monotonic(), scaling)
            self._mismatch.pop((target.id, obis), None)
        return row

    def _unverified_reason(self, target: MeterTarget, obis: str) -> str:
        quantity = BY_OBIS[obis]
        return (
            f"meter {target.serial}: {obis} has no known unit or scaler; stored as read, "
            f"flagged unit_unverified (the head-end expects {quantity.unit})"
        )

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
                out.units.append(self._learn_scaler(target, obis, value))
        columns: dict[int, tuple[str, Scaling]] = {}
        for column, obis in layout.columns.items():
            cached = self._scalers.get((target.id, obis))
            if cached is None:
                reason = self._mismatch.get((target.id, obis), "no scaler")
                out.problem(Task.PROFILE, obis, f"meter {target.serial}: column skipped: {reason}")
                continue
            columns[column] = (obis, cached[1])
        ranges = missing_ranges(
            ledger, horizon, now, layout.period_s, max_ranges=MAX_RANGES_PER_SESSION
        )
        out.profile_period = layout.period_s
        bad: dict[str, str] = {}
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
                for column, (obis, scaling) in columns.items():
                    try:
                        number = scaling.apply(row[column])
                    except ScalingError as exc:
                        bad.setdefault(obis, str(exc))
                        continue
                    out.profile.append(Reading(scaling.quantity.id, at, number, scaling.quality))
            out.profile_reads.append(((start, end), received))
        for obis, reason in bad.items():
            out.problem(Task.PROFILE, obis, f"meter {target.serial}: {reason}")
        for obis, scaling in columns.values():
            if scaling.quality:
                out.problem(Task.PROFILE, obis, self._unverified_reason(target, obis), True)


def _failed(exc: Exception) -> TaskOutcome:
    if isinstance(exc, DataAccessError):
        return TaskOutcome(error=exc.message, denied=isinstance(exc, AccessDenied))
    return TaskOutcome(error=str(exc))


def _nothing_read(what: str, problems: Sequence[Problem], *, denied: bool = False) -> TaskOutcome:
    """A task none of whose objects could be read: failed, naming each; ``denied`` when the
    meter refuses them to this client (the task keeps its schedule instead of retrying)."""
    listed = "; ".join(f"{p.obis}: {p.reason}" for p in problems[:6])
    more = f" (and {len(problems) - 6} more)" if len(problems) > 6 else ""
    return TaskOutcome(error=f"no {what} could be read: {listed}{more}", denied=denied)


def _log_entries(
    log_obis: str,
    rows: list[list[CosemValue]],
    serial: str,
    table: dict[int, MeterEventKind],
) -> list[LogEntry]:
    entries: list[LogEntry] = []
    for row in rows:
        if len(row) < 2 or isinstance(row[1], bool) or not isinstance(row[1], int):
            raise LinkError(f"meter {serial} sent a malformed {log_obis} entry")
        entries.append(
            LogEntry(
                log=log_obis,
                code=row[1],
                at=as_datetime(row[0], f"meter {serial} event"),
                kind=table.get(row[1], MeterEventKind.OTHER),
            )
        )
    return entries
