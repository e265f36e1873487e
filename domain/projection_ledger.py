"""The ProjectionLedger aggregate: what operators did to a projection, for auditors.

A projection that cannot apply an event (a poison event) stops at it. When fixing the code is
not the answer, an operator skips that one position; the skip is recorded here, in the
``operations`` event log, with who, when and why. The skipped event itself stays in its log.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import Collector
from domain.meta import EventMeta

LEDGER_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:projection-ledger")
MAX_REASON = 500


def ledger_id(projection: str) -> UUID:
    """Deterministic aggregate id of a projection's ledger (its name names it)."""
    return uuid5(LEDGER_NAMESPACE, projection)


def check_reason(errors: Collector, reason: str) -> None:
    """A skip needs a reason an auditor can read: 1..500 printable characters."""
    text = reason.strip()
    if not text or len(text) > MAX_REASON:
        errors.add("reason", "length", f"reason must have 1..{MAX_REASON} characters")
    elif any(ord(c) < 32 and c not in "\t\n" for c in text):
        errors.add("reason", "characters", "reason must not contain control characters")


class ProjectionLedger(Aggregate):
    """One projection's skipped positions, each with its actor and reason."""

    class Opened(Aggregate.Created):
        """The first intervention in this projection."""

        projection: str
        meta: EventMeta

    class PositionSkipped(Aggregate.Event):
        """The projection moved past an event it could not apply, without applying it."""

        position: int
        """Position (notification id) of the skipped event in its log."""
        log: str
        """The event log holding the skipped event (meters, tariffs, alerts...)."""
        event_id: UUID | None
        """CloudEvents id of the skipped event (as relayed to HES_EVENTS)."""
        topic: str
        reason: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Remember the skipped position."""
            aggregate.skipped = (*aggregate.skipped, self.position)

    def __init__(self, projection: str, meta: EventMeta) -> None:
        self.projection = projection
        self.skipped: tuple[int, ...] = ()

    @staticmethod
    def create_id(projection: str) -> UUID:
        """The ledger's id, from the projection's name."""
        return ledger_id(projection)

    @classmethod
    def open(cls, projection: str, meta: EventMeta) -> ProjectionLedger:
        """A new, empty ledger of ``projection``."""
        return cls._create(cls.Opened, projection=projection, meta=meta)

    def skip(
        self,
        position: int,
        log: str,
        event_id: UUID | None,
        topic: str,
        reason: str,
        meta: EventMeta,
    ) -> bool:
        """Record the skip of ``position``; False when it was recorded before (idempotent)."""
        errors = Collector()
        check_reason(errors, reason)
        if position < 1:
            errors.add("position", "range", "position must be 1 or more")
        errors.raise_if_any()
        if position in self.skipped:
            return False
        self.trigger_event(
            self.PositionSkipped,
            position=position,
            log=log,
            event_id=event_id,
            topic=topic,
            reason=reason.strip(),
            meta=meta,
        )
        return True
