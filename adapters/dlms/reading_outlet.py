"""Readings read from meters into the reading pipeline: validated like ingest, published to
JetStream (READINGS), rejected ones dead-lettered with their reason."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec

from adapters.dlms.session import MeterTarget
from commands.ingest import READINGS_PER_MESSAGE, DeadLetterSink, ReadingSink, Rejection
from domain.obis import BY_ID
from domain.reading_rules import Proposed, TimeWindow, check_meter
from domain.readings import MeterBatch, Reading, Source, partition_of


class OutletResult(msgspec.Struct, frozen=True):
    """What happened to the readings of one call."""

    accepted: int
    rejected: int


class ReadingOutlet:
    """Publishes one meter's readings at a time."""

    def __init__(
        self,
        sink: ReadingSink,
        dead_letters: DeadLetterSink,
        *,
        partitions: int,
        future_tolerance_seconds: float,
        max_age_seconds: float,
    ) -> None:
        self._sink = sink
        self._dead_letters = dead_letters
        self._partitions = partitions
        self._future = timedelta(seconds=future_tolerance_seconds)
        self._max_age = timedelta(seconds=max_age_seconds)

    async def publish(
        self, target: MeterTarget, readings: Sequence[Reading], source: Source
    ) -> OutletResult:
        """Validate and publish; returns once JetStream acknowledged every batch."""
        return await self.publish_many([(target, readings)], source)

    async def publish_many(
        self, items: Sequence[tuple[MeterTarget, Sequence[Reading]]], source: Source
    ) -> OutletResult:
        """Validate and publish several meters' readings in one JetStream round."""
        now = datetime.now(UTC)
        window = TimeWindow(now=now, future_tolerance=self._future, max_age=self._max_age)
        batches: list[MeterBatch] = []
        partitions: list[int] = []
        rejections: list[Rejection] = []
        accepted = 0
        for target, readings in items:
            proposed = [Proposed(r, BY_ID[r.quantity].obis) for r in readings]
            checked = check_meter(proposed, window)
            for index, violation in checked.rejected:
                reading = readings[index]
                rejections.append(
                    Rejection(
                        source=source,
                        received_at=now,
                        serial=target.serial,
                        item=index,
                        field=BY_ID[reading.quantity].obis,
                        rule=violation.rule,
                        message=violation.message,
                        raw={"ts": reading.ts.isoformat(), "value": reading.value},
                    )
                )
            good = sorted((r for _, r in checked.accepted), key=lambda r: (r.ts, r.quantity))
            accepted += len(good)
            partition = partition_of(target.area, self._partitions)
            for start in range(0, len(good), READINGS_PER_MESSAGE):
                batches.append(
                    MeterBatch(
                        meter=target.id,
                        region=target.region,
                        source=int(source),
                        readings=good[start : start + READINGS_PER_MESSAGE],
                        received_at=now,
                    )
                )
                partitions.append(partition)
        if batches:
            await self._sink.publish(batches, partitions)
        if rejections:
            await self._dead_letters.reject(rejections)
        return OutletResult(accepted=accepted, rejected=len(rejections))
