"""Campaigns: one remote operation (firmware, calendar, load limit) over a cohort of meters.

The aggregate is the arbiter of every meter's step: a runner starts a meter only by recording
``MeterStarted`` (a second runner, or a second look, conflicts on the save and skips it), and
a meter's command id is derived from the campaign and the serial, so asking the meter again
after a crash finds the same command instead of starting a new one.
"""

from __future__ import annotations

import enum
from collections import Counter
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.domain import Aggregate, event

from domain.errors import Collector, Conflict, DomainError, NotFound
from domain.idempotency import RemembersCommands
from domain.load_limit import LoadLimit
from domain.meta import EventMeta
from domain.remote_commands import CommandArgs, CommandKind, check_reason
from domain.text import check_text
from domain.values import check_name

CAMPAIGN_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:campaign")
MAX_COHORT = 4_000
"""Meters one campaign targets at most: ``Started`` records the resolved cohort (~150 bytes a
meter) and must stay one relayable message (NATS' default limit is 1 MB)."""
MAX_CONCURRENCY = 10_000
MAX_ATTEMPTS = 10


class CampaignKind(enum.StrEnum):
    """What a campaign does to each meter."""

    FIRMWARE = "FIRMWARE"
    CALENDAR = "CALENDAR"
    LOAD_LIMIT = "LOAD_LIMIT"

    @property
    def command(self) -> CommandKind:
        """The meter's remote command that carries this campaign out."""
        return {
            CampaignKind.FIRMWARE: CommandKind.FIRMWARE_UPDATE,
            CampaignKind.CALENDAR: CommandKind.WRITE_CALENDAR,
            CampaignKind.LOAD_LIMIT: CommandKind.SET_LOAD_LIMIT,
        }[self]


class CampaignStatus(enum.StrEnum):
    """Running → paused ⇄ running → completed | cancelled."""

    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


class MeterState(enum.StrEnum):
    """Where one meter of a campaign stands."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    AWAITING_ACTIVATION = "AWAITING_ACTIVATION"
    """Firmware transferred and verified; the meter activates it at the campaign's time."""
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


FINISHED = frozenset({MeterState.SUCCEEDED, MeterState.FAILED, MeterState.SKIPPED})
OPEN = frozenset({CampaignStatus.RUNNING, CampaignStatus.PAUSED})
IN_FLIGHT = frozenset({MeterState.RUNNING, MeterState.AWAITING_ACTIVATION})
"""Meters whose command is out: their outcome is still to be recorded."""


class CohortFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which meters a campaign targets: by attributes, or an explicit list of serials."""

    region: str | None = None
    area: str | None = None
    model: str | None = None
    firmware: str | None = None
    serials: tuple[str, ...] = ()

    def check(self, errors: Collector) -> None:
        """Record the rules this filter breaks."""
        attributes = [self.region, self.area, self.model, self.firmware]
        if self.serials and any(a is not None for a in attributes):
            errors.add("cohort", "exclusive", "give either serials or attribute filters, not both")
        if not self.serials and all(a is None for a in attributes):
            errors.add("cohort", "required", "give serials or at least one attribute filter")
        if len(self.serials) > MAX_COHORT:
            errors.add("cohort.serials", "count", f"give at most {MAX_COHORT} serials")
        if len({s.strip().upper() for s in self.serials}) != len(self.serials):
            errors.add("cohort.serials", "unique", "each serial may be given once")
        for name in ("region", "area", "model"):
            value = getattr(self, name)
            if value is not None:
                check_name(errors, f"cohort.{name}", value)
        if self.firmware is not None:
            check_text(errors, "cohort.firmware", self.firmware, max_chars=64)


class CampaignLimits(msgspec.Struct, frozen=True, kw_only=True):
    """How fast a campaign goes: meters at once, per cell (concentrator), attempts per meter."""

    concurrency: int = 10
    per_cell: int = 2
    max_attempts: int = 3

    def check(self, errors: Collector) -> None:
        """Record the rules these limits break."""
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            errors.add("limits.concurrency", "range", f"concurrency is 1..{MAX_CONCURRENCY}")
        if not 1 <= self.per_cell <= MAX_CONCURRENCY:
            errors.add("limits.perCell", "range", f"perCell is 1..{MAX_CONCURRENCY}")
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            errors.add("limits.maxAttempts", "range", f"maxAttempts is 1..{MAX_ATTEMPTS}")


class CampaignSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a campaign does, to whom and how fast."""

    name: str
    kind: CampaignKind
    cohort: CohortFilter
    limits: CampaignLimits = CampaignLimits()
    image_id: UUID | None = None
    tou_plan_id: UUID | None = None
    tou_plan_version: int | None = None
    load_limit: LoadLimit | None = None
    activate_at: datetime | None = None
    """FIRMWARE: meters activate the image at this time (None: each at once)."""

    def args(self) -> CommandArgs:
        """The arguments of each meter's remote command."""
        return CommandArgs(
            image_id=self.image_id,
            tou_plan_id=self.tou_plan_id,
            tou_plan_version=self.tou_plan_version,
            load_limit=self.load_limit,
            activate_at=self.activate_at,
        )

    def check(self) -> None:
        """Raise ``ValidationFailed`` naming every rule this campaign breaks."""
        errors = Collector()
        check_text(errors, "name", self.name, max_chars=120)
        self.cohort.check(errors)
        self.limits.check(errors)
        try:
            self.args().check(self.kind.command)
        except DomainError as exc:
            for error in getattr(exc, "errors", []):
                errors.add(error.field, error.rule, error.message)
        errors.raise_if_any()


class CohortMember(msgspec.Struct, frozen=True, kw_only=True):
    """One meter of a resolved cohort, with what the limits and the target check need."""

    meter_id: UUID
    serial: str
    manufacturer: str
    model: str
    concentrator_id: str | None = None

    @property
    def cell(self) -> str:
        """The cell the per-cell limit counts in: the concentrator, or the meter alone."""
        return self.concentrator_id or f"meter:{self.serial.upper()}"


class MeterProgress(msgspec.Struct, kw_only=True):
    """One meter's state in a campaign."""

    member: CohortMember
    state: MeterState = MeterState.PENDING
    attempts: int = 0
    reason: str | None = None
    updated_at: datetime | None = None


class Skip(msgspec.Struct, frozen=True, kw_only=True):
    """A cohort member the campaign will not touch, and why (recorded at start)."""

    serial: str
    reason: str


def campaign_command_id(campaign: UUID, serial: str) -> UUID:
    """Id of the remote command a campaign runs on a meter: the same for every attempt."""
    return uuid5(CAMPAIGN_NAMESPACE, f"{campaign}:{serial.strip().upper()}")


class Campaign(Aggregate, RemembersCommands):
    """A fleet operation and the state of each of its meters."""

    class Started(Aggregate.Created):
        """The campaign started over this resolved cohort (members skipped are named)."""

        spec: CampaignSpec
        cohort: tuple[CohortMember, ...]
        skipped: tuple[Skip, ...]
        meta: EventMeta

    class Paused(Aggregate.Event):
        """No more meters start until resumed (running ones finish)."""

        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Pause."""
            aggregate.status = CampaignStatus.PAUSED
            aggregate.remember(self.meta)

    class Resumed(Aggregate.Event):
        """Meters start again."""

        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Resume."""
            aggregate.status = CampaignStatus.RUNNING
            aggregate.remember(self.meta)

    class Cancelled(Aggregate.Event):
        """No more meters start; pending ones are skipped (running ones finish)."""

        reason: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Cancel: skip every pending meter."""
            aggregate.status = CampaignStatus.CANCELLED
            for progress in aggregate.meters.values():
                if progress.state is MeterState.PENDING:
                    progress.state = MeterState.SKIPPED
                    progress.reason = f"campaign cancelled: {self.reason}"
                    progress.updated_at = self.timestamp
            aggregate.remember(self.meta)

    class MeterStarted(Aggregate.Event):
        """The runner asked the meter to run the campaign's command (attempt ``attempt``)."""

        serial: str
        command_id: UUID
        attempt: int
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the meter running."""
            progress = aggregate.meters[self.serial]
            progress.state = MeterState.RUNNING
            progress.attempts = self.attempt
            progress.reason = None
            progress.updated_at = self.timestamp

    class MeterAwaitingActivation(Aggregate.Event):
        """The meter holds the verified image and activates it at the scheduled time; it no
        longer counts against the limits."""

        serial: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the meter awaiting its activation."""
            progress = aggregate.meters[self.serial]
            progress.state = MeterState.AWAITING_ACTIVATION
            progress.updated_at = self.timestamp

    class MeterSucceeded(Aggregate.Event):
        """The meter's command was confirmed."""

        serial: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the meter done."""
            progress = aggregate.meters[self.serial]
            progress.state = MeterState.SUCCEEDED
            progress.updated_at = self.timestamp

    class MeterFailed(Aggregate.Event):
        """The meter's attempt failed; ``final`` when no attempt is left (else it waits again)."""

        serial: str
        reason: str
        final: bool
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the meter failed, or pending for another attempt."""
            progress = aggregate.meters[self.serial]
            progress.state = MeterState.FAILED if self.final else MeterState.PENDING
            progress.reason = self.reason
            progress.updated_at = self.timestamp

    class MeterSkipped(Aggregate.Event):
        """The meter could not be asked at all (decommissioned, refused); it is left alone."""

        serial: str
        reason: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the meter skipped."""
            progress = aggregate.meters[self.serial]
            progress.state = MeterState.SKIPPED
            progress.reason = self.reason
            progress.updated_at = self.timestamp

    class Completed(Aggregate.Event):
        """Every meter finished (succeeded, failed or skipped)."""

        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Close the campaign."""
            aggregate.status = CampaignStatus.COMPLETED

    @classmethod
    def start(
        cls,
        campaign_id: UUID,
        spec: CampaignSpec,
        cohort: list[CohortMember],
        skipped: list[Skip],
        meta: EventMeta,
    ) -> Campaign:
        """A new running campaign over ``cohort`` (members in ``skipped`` are left alone)."""
        spec.check()
        errors = Collector()
        if not cohort:
            errors.add("cohort", "empty", "no registered meter matches the cohort")
        if len(cohort) > MAX_COHORT:
            errors.add(
                "cohort",
                "size",
                f"the cohort has {len(cohort)} meters; a campaign takes at most {MAX_COHORT}: "
                "split it (by area, model...)",
            )
        errors.raise_if_any()
        serials = [m.serial for m in cohort]
        if len(set(serials)) != len(serials):
            raise Conflict("a cohort lists a meter twice")
        return cls(
            id=campaign_id, spec=spec, cohort=tuple(cohort), skipped=tuple(skipped), meta=meta
        )

    @event(Started)
    def __init__(
        self,
        id: UUID,
        spec: CampaignSpec,
        cohort: tuple[CohortMember, ...],
        skipped: tuple[Skip, ...],
        meta: EventMeta,
    ) -> None:
        self.spec = spec
        self.status = CampaignStatus.RUNNING
        self.meters: dict[str, MeterProgress] = {
            m.serial: MeterProgress(member=m, updated_at=self._created_on) for m in cohort
        }
        for skip in skipped:
            progress = self.meters[skip.serial]
            progress.state = MeterState.SKIPPED
            progress.reason = skip.reason
        self.commands: dict[str, str | None] = {}
        self.remember(meta)

    # -- control ---------------------------------------------------------------------

    def pause(self, meta: EventMeta) -> bool:
        """Pause a running campaign; False when it is paused already."""
        if self.status is CampaignStatus.PAUSED:
            return False
        self._ensure(CampaignStatus.RUNNING, "pause it")
        self.trigger_event(self.Paused, meta=meta)
        return True

    def resume(self, meta: EventMeta) -> bool:
        """Resume a paused campaign; False when it runs already."""
        if self.status is CampaignStatus.RUNNING:
            return False
        self._ensure(CampaignStatus.PAUSED, "resume it")
        self.trigger_event(self.Resumed, meta=meta)
        return True

    def cancel(self, reason: str, meta: EventMeta) -> None:
        """Cancel the campaign: pending meters are skipped, running ones finish."""
        if self.status not in OPEN:
            raise Conflict(f"campaign {self.spec.name!r} is {self.status}: cannot cancel it")
        errors = Collector()
        check_text(errors, "reason", reason, max_chars=500)
        errors.raise_if_any()
        self.trigger_event(self.Cancelled, reason=reason.strip(), meta=meta)

    def _ensure(self, status: CampaignStatus, action: str) -> None:
        if self.status is not status:
            raise Conflict(f"campaign {self.spec.name!r} is {self.status}: cannot {action}")

    # -- the runner's steps ------------------------------------------------------------

    def progress(self, serial: str) -> MeterProgress:
        """The state of the meter with this serial, or ``NotFound``."""
        try:
            return self.meters[serial]
        except KeyError:
            raise NotFound(f"campaign {self.spec.name!r} has no meter {serial}") from None

    def counts(self) -> dict[MeterState, int]:
        """Meters per state."""
        found = Counter(p.state for p in self.meters.values())
        return {state: found.get(state, 0) for state in MeterState}

    def next_to_start(self) -> list[str]:
        """Serials the limits allow to start now, first attempts first, in cohort order."""
        if self.status is not CampaignStatus.RUNNING:
            return []
        running = [p for p in self.meters.values() if p.state is MeterState.RUNNING]
        room = self.spec.limits.concurrency - len(running)
        per_cell = Counter(p.member.cell for p in running)
        chosen: list[str] = []
        pending = [p for p in self.meters.values() if p.state is MeterState.PENDING]
        for progress in sorted(pending, key=lambda p: p.attempts):  # stable: cohort order
            if room <= 0:
                break
            cell = progress.member.cell
            if per_cell[cell] >= self.spec.limits.per_cell:
                continue
            per_cell[cell] += 1
            room -= 1
            chosen.append(progress.member.serial)
        return chosen

    def start_meter(self, serial: str, meta: EventMeta) -> UUID:
        """Record that the meter is started now; ``Conflict`` unless the limits allow it."""
        progress = self.progress(serial)
        if progress.state is not MeterState.PENDING:
            raise Conflict(f"meter {serial} is {progress.state} in campaign {self.id}")
        if serial not in self.next_to_start():
            raise Conflict(
                f"campaign {self.id} cannot start meter {serial} now "
                f"({self.status}; concurrency or cell limit reached)"
            )
        command_id = campaign_command_id(self.id, serial)
        self.trigger_event(
            self.MeterStarted,
            serial=serial,
            command_id=command_id,
            attempt=progress.attempts + 1,
            meta=meta,
        )
        return command_id

    def meter_awaiting_activation(self, serial: str, meta: EventMeta) -> None:
        """Record that the meter's image waits for its scheduled activation."""
        progress = self.progress(serial)
        if progress.state is not MeterState.RUNNING:
            raise Conflict(f"meter {serial} is {progress.state} in campaign {self.id}")
        self.trigger_event(self.MeterAwaitingActivation, serial=serial, meta=meta)

    def meter_succeeded(self, serial: str, meta: EventMeta) -> None:
        """Record that the meter's command was confirmed."""
        self._ensure_running(serial)
        self.trigger_event(self.MeterSucceeded, serial=serial, meta=meta)
        self._complete_if_done(meta)

    def meter_failed(self, serial: str, reason: str, meta: EventMeta) -> bool:
        """Record a failed attempt; True when the meter has no attempt left (final)."""
        progress = self._ensure_running(serial)
        final = (
            progress.attempts >= self.spec.limits.max_attempts
            or self.status is CampaignStatus.CANCELLED
        )
        self.trigger_event(
            self.MeterFailed, serial=serial, reason=check_reason(reason), final=final, meta=meta
        )
        self._complete_if_done(meta)
        return final

    def skip_meter(self, serial: str, reason: str, meta: EventMeta) -> None:
        """Leave a pending or running meter alone for good (it cannot be asked)."""
        progress = self.progress(serial)
        if progress.state in FINISHED:
            raise Conflict(f"meter {serial} is {progress.state} in campaign {self.id}")
        self.trigger_event(self.MeterSkipped, serial=serial, reason=check_reason(reason), meta=meta)
        self._complete_if_done(meta)

    def _ensure_running(self, serial: str) -> MeterProgress:
        progress = self.progress(serial)
        if progress.state not in IN_FLIGHT:
            raise Conflict(f"meter {serial} is {progress.state} in campaign {self.id}")
        return progress

    def _complete_if_done(self, meta: EventMeta) -> None:
        if self.status not in OPEN:
            return  # a cancelled campaign stays cancelled while its running meters finish
        if all(p.state in FINISHED for p in self.meters.values()):
            self.trigger_event(self.Completed, meta=meta)
