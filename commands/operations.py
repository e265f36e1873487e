"""The ``operations`` event log: operators' interventions in the system, for auditors.

Kept apart from the business logs (meters, tariffs, alerts), so it is never relayed to
HES_EVENTS, while it is hash-chained and checkpointed like them (commands.audit_verify.LOGS)
and readable with ``hes audit history <projection name>``.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import Mapper

from commands.codec import MsgspecMapper
from commands.concurrency import Save, save_with_retry
from commands.context import CommandContext
from domain.projection_ledger import ProjectionLedger, ledger_id


class OperationsLog(Application[UUID]):
    """The write side of operators' interventions (projection skips)."""

    name = "operations"

    def construct_mapper(self) -> Mapper[UUID]:
        """Encode events with msgspec instead of the library's JSON transcoder."""
        return MsgspecMapper()

    def ledger(self, projection: str) -> ProjectionLedger | None:
        """The projection's ledger, or None when nobody ever intervened."""
        try:
            found: ProjectionLedger = self.repository.get(ledger_id(projection))
        except AggregateNotFoundError:
            return None
        return found

    def record_skip(
        self,
        projection: str,
        position: int,
        *,
        log: str,
        event_id: UUID | None,
        topic: str,
        reason: str,
        ctx: CommandContext,
    ) -> bool:
        """Record that ``projection`` skips ``position``; False when already recorded."""
        meta = ctx.meta("skipProjectionPosition", projection, position, reason)

        def attempt() -> bool | Save[bool]:
            ledger = self.ledger(projection) or ProjectionLedger.open(projection, meta)
            if not ledger.skip(position, log, event_id, topic, reason, meta):
                return False
            return Save((ledger,), lambda _: True)

        return save_with_retry(
            self, attempt, f"the ledger of {projection} is changing too fast; try again"
        )
