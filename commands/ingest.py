"""Reading ingest: parse a telemetry request, validate it, publish batches, dead-letter the rest."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol
from uuid import UUID

import msgspec

from commands.telemetry_forms import BODY_EXCERPT_CHARS, Candidate, ItemError, parse_telemetry
from domain.meter import meter_id
from domain.obis import ENERGY_IMPORT
from domain.reading_rules import (
    TIME_RULES,
    Proposed,
    RegisterState,
    TimeWindow,
    check_meter,
)
from domain.readings import MeterBatch, Reading, Source, partition_of
from domain.values import MeterStatus

READINGS_PER_MESSAGE = 500
"""Most readings in one ``MeterBatch`` message; a meter's larger share is split."""


class MeterInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What ingest needs to know about a registered meter."""

    id: UUID
    serial: str
    region: str
    area: str
    """The meter's group: decides its READINGS partition."""
    status: str
    """A ``domain.values.MeterStatus`` value."""
    last_energy_wh: float | None = None
    """Latest stored active-energy-import register value."""
    last_energy_ts: datetime | None = None


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """One rejected reading or item, as recorded on the dead-letter stream."""

    source: Source
    received_at: datetime
    serial: str | None
    item: int
    field: str
    rule: str
    message: str
    raw: object
    """The offending JSON value (item or OBIS reading), decoded; an excerpt for a bad body."""


class IngestResult(msgspec.Struct, frozen=True):
    """The answer to a request: readings accepted, items/readings rejected, and why."""

    accepted: int
    rejected: int
    """Number of rejections (= ``len(errors)``); an item that fails as a whole counts once."""
    errors: list[ItemError]


class MeterDirectory(Protocol):
    """The meter registry as ingest sees it."""

    async def lookup(self, ids: Collection[UUID]) -> Mapping[UUID, MeterInfo]:
        """The known meters among ``ids``; unknown ids are absent from the answer."""
        ...


class ReadingSink(Protocol):
    """Where accepted readings go (JetStream ``READINGS``)."""

    async def publish(self, batches: Sequence[MeterBatch], partitions: Sequence[int]) -> None:
        """Publish each batch to its partition (same order); raise ``BackPressure`` when full.

        Returns only when every batch is acknowledged. Batches already published before a
        failure stay published; a re-send carries the same ``MeterBatch.message_id`` and is
        dropped by JetStream's duplicate window.
        """
        ...


class DeadLetterSink(Protocol):
    """Where rejected input goes (JetStream ``HES_DEADLETTER``)."""

    async def reject(self, rejections: Sequence[Rejection]) -> None:
        """Record every rejection durably, or raise."""
        ...


def _now() -> datetime:
    return datetime.now(UTC)


class IngestService:
    """Validates telemetry requests and hands readings to the transport, per meter batch."""

    def __init__(
        self,
        directory: MeterDirectory,
        sink: ReadingSink,
        dead_letters: DeadLetterSink,
        *,
        partitions: int,
        max_batch_readings: int,
        future_tolerance_seconds: float,
        max_age_seconds: float,
        clock: Callable[[], datetime] = _now,
        readings_per_message: int = READINGS_PER_MESSAGE,
    ) -> None:
        if partitions < 1 or max_batch_readings < 1 or readings_per_message < 1:
            raise ValueError("partitions, max_batch_readings, readings_per_message must be >= 1")
        self._directory = directory
        self._sink = sink
        self._dead_letters = dead_letters
        self._partitions = partitions
        self._max_batch_readings = max_batch_readings
        self._future_tolerance = timedelta(seconds=future_tolerance_seconds)
        self._max_age = timedelta(seconds=max_age_seconds)
        self._clock = clock
        self._per_message = readings_per_message

    async def ingest(self, body: bytes, source: Source) -> IngestResult:
        """Parse, validate, publish and dead-letter one request; all of it or raise.

        Accepted readings are published first, then every rejection is dead-lettered. If
        either step raises (``BackPressure`` from the sink, anything from the dead-letter
        sink) the exception propagates and the request must be answered as failed: batches
        published before the failure cannot be withdrawn, but a retry of the same body yields
        the same message ids, which JetStream's duplicate window drops, so retrying is safe.
        """
        received_at = self._clock()
        parsed = parse_telemetry(body, max_readings=self._max_batch_readings)
        outcome = _Outcome(parsed.items)
        for error, raw in zip(parsed.errors, parsed.error_raws, strict=True):
            outcome.reject(error, raw)

        by_meter: dict[UUID, list[Candidate]] = {}
        ids: dict[str, UUID] = {}
        for candidate in parsed.candidates:
            mid = ids.get(candidate.serial)
            if mid is None:
                mid = ids[candidate.serial] = meter_id(candidate.serial)
            by_meter.setdefault(mid, []).append(candidate)
        meters = await self._directory.lookup(list(by_meter)) if by_meter else {}

        window = TimeWindow(
            now=received_at, future_tolerance=self._future_tolerance, max_age=self._max_age
        )
        for mid, candidates in by_meter.items():
            info = meters.get(mid)
            if info is None or info.status == MeterStatus.DECOMMISSIONED:
                outcome.refuse(candidates, info)
            else:
                self._validate(mid, info, candidates, window, source, received_at, outcome)

        if outcome.batches:
            await self._sink.publish(outcome.batches, outcome.partitions)
        ordered = sorted(outcome.rejections.values(), key=lambda pair: pair[0].item)
        if ordered:
            await self._dead_letters.reject(
                [
                    Rejection(
                        source=source,
                        received_at=received_at,
                        serial=error.serial,
                        item=error.item,
                        field=error.field,
                        rule=error.rule,
                        message=error.message,
                        raw=_raw_value(raw),
                    )
                    for error, raw in ordered
                ]
            )
        return IngestResult(
            accepted=sum(len(b.readings) for b in outcome.batches),
            rejected=len(ordered),
            errors=[error for error, _ in ordered],
        )

    def _validate(
        self,
        mid: UUID,
        info: MeterInfo,
        candidates: list[Candidate],
        window: TimeWindow,
        source: Source,
        received_at: datetime,
        outcome: _Outcome,
    ) -> None:
        """Check one meter's candidates and add its batches and rejections to ``outcome``."""
        checked = check_meter(
            [Proposed(Reading(c.quantity, c.ts, c.value, c.quality), c.label) for c in candidates],
            window,
            _last_registers(info),
        )
        for index, violation in checked.rejected:
            c = candidates[index]
            field = c.ts_field if violation.rule in TIME_RULES else c.field
            outcome.reject(
                ItemError(c.item, field, violation.rule, violation.message, c.serial), c.raw
            )
        # Sorted so that a retried request splits into the same messages (same message ids).
        readings = sorted((r for _, r in checked.accepted), key=lambda r: (r.ts, r.quantity))
        partition = partition_of(info.area, self._partitions)
        for start in range(0, len(readings), self._per_message):
            outcome.batches.append(
                MeterBatch(
                    meter=mid,
                    region=info.region,
                    source=int(source),
                    readings=readings[start : start + self._per_message],
                    received_at=received_at,
                )
            )
            outcome.partitions.append(partition)


class _Outcome:
    """Batches to publish and rejections to dead-letter, gathered over one request."""

    def __init__(self, items: list[msgspec.Raw]) -> None:
        self.items = items
        self.batches: list[MeterBatch] = []
        self.partitions: list[int] = []
        self.rejections: dict[tuple[int, str, str], tuple[ItemError, msgspec.Raw]] = {}

    def reject(self, error: ItemError, raw: msgspec.Raw) -> None:
        """Add a rejection; the same item, field and rule (e.g. a gateway timestamp) once."""
        self.rejections.setdefault((error.item, error.field, error.rule), (error, raw))

    def refuse(self, candidates: list[Candidate], info: MeterInfo | None) -> None:
        """Reject every item of a meter that is unknown or out of service, once per item."""
        serial = candidates[0].serial
        if info is None:
            rule, message = "unknown-meter", f"no meter with serial {serial!r} is registered"
        else:
            rule, message = "decommissioned", f"meter {serial!r} is decommissioned"
        for c in candidates:
            self.reject(
                ItemError(c.item, c.serial_field, rule, message, c.serial), self.items[c.item]
            )


def _raw_value(raw: msgspec.Raw) -> object:
    """The offending JSON value decoded, or its text when it will not decode (1e400)."""
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return bytes(raw)[:BODY_EXCERPT_CHARS].decode("utf-8", errors="replace")


def _last_registers(info: MeterInfo) -> dict[int, RegisterState]:
    if info.last_energy_wh is None or info.last_energy_ts is None:
        return {}
    return {ENERGY_IMPORT.id: RegisterState(info.last_energy_wh, info.last_energy_ts)}
