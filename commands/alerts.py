"""Alert desk commands: raise or recur, acknowledge, resolve, auto-resolve; one open per cause."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Mapper, Recording

from commands.codec import MsgspecMapper
from commands.concurrency import Save, last_position, save_with_retry
from commands.context import CommandContext
from commands.policy import authorize
from domain.alert import Alert, AlertSeries, AlertSpec, Evidence, alert_id, series_id
from domain.detection import AlertDecision, Verdict
from domain.errors import Conflict, FieldError, NotFound, ValidationFailed
from domain.meta import EventMeta


class AlertOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What an alert command did: the alert as it now is and where its last event sits."""

    alert: Alert
    notification_id: int | None
    """Position of the last recorded event; ``None`` when nothing new was recorded."""
    opened: bool = False
    """True when the command opened a new alert (rather than adding an occurrence)."""
    replayed: bool = False
    """True when an idempotency key matched an earlier, identical command."""


class AlertDesk(Application[UUID]):
    """The write side of alerts."""

    name = "alerts"

    def construct_mapper(self) -> Mapper[UUID]:
        """Encode events with msgspec instead of the library's JSON transcoder."""
        return MsgspecMapper()

    # -- queries on the write model (used by commands, never by clients) -------------

    def get(self, id_: UUID) -> Alert:
        """Load an alert or raise ``NotFound``."""
        try:
            alert: Alert = self.repository.get(id_)
        except AggregateNotFoundError:
            raise NotFound(f"no alert with id {id_}") from None
        return alert

    def series(self, dedup_key: str) -> AlertSeries | None:
        """The series of alerts for a cause, or ``None`` before its first alert."""
        try:
            series: AlertSeries = self.repository.get(series_id(dedup_key))
        except AggregateNotFoundError:
            return None
        return series

    def open_alert(self, dedup_key: str) -> Alert | None:
        """The cause's open (unresolved) alert, if any."""
        series = self.series(dedup_key)
        if series is None or series.open_alert is None:
            return None
        return self.get(series.open_alert)

    # -- commands ------------------------------------------------------------------

    def raise_or_recur(self, decision: AlertDecision, ctx: CommandContext) -> AlertOutcome:
        """Open an alert for the decision's cause, or add an occurrence to the open one."""
        authorize(ctx.actor, "raiseAlert")
        if decision.verdict is not Verdict.RAISE:
            raise ValidationFailed(
                [
                    FieldError(
                        "verdict",
                        "allowed",
                        f"only RAISE decisions raise alerts, got {decision.verdict}",
                    )
                ]
            )
        spec = AlertSpec(
            alert_type=decision.alert_type,
            severity=decision.severity,
            region=decision.region,
            dedup_key=decision.dedup_key,
            message=decision.message,
            meter=decision.meter,
            evidence=decision.evidence,
        )
        spec.check()
        # The key names the evidence (e.g. a window); a detector repeating it sees the cause with
        # a later clock and refined figures, which is the same command, not a conflicting one.
        meta = ctx.meta("raiseAlert", spec.dedup_key, spec.alert_type)
        at = decision.observed_at

        def attempt() -> AlertOutcome | Save[AlertOutcome]:
            series = self.series(spec.dedup_key)
            if series is not None and series.open_alert is not None:
                alert = self.get(series.open_alert)
                if alert.seen(meta):
                    return AlertOutcome(alert=alert, notification_id=None, replayed=True)
                alert.recur(at, spec.evidence, spec.severity, meta)
                pending: tuple[Aggregate, ...] = (alert,)
                opened = False
            else:
                if series is not None and series.generation > 0:
                    last = self.get(alert_id(spec.dedup_key, series.generation))
                    if last.seen(meta):
                        # Evidence the closed alert already carried: resolving an alert must not
                        # bring it straight back; only new evidence (a new key) opens the next.
                        return AlertOutcome(alert=last, notification_id=None, replayed=True)
                if series is None:
                    series = AlertSeries(dedup_key=spec.dedup_key, meta=meta)
                _, generation = series.open_next(meta)
                alert = Alert.open(spec, generation, at, meta)
                pending = (series, alert)
                opened = True
            return Save(pending, _answer(alert, opened))

        return save_with_retry(
            self, attempt, f"alert {spec.dedup_key!r} is changing too fast; try again"
        )

    def acknowledge(
        self, id_: UUID, ctx: CommandContext, at: datetime | None = None
    ) -> AlertOutcome:
        """Record that the actor took ownership of the alert."""
        authorize(ctx.actor, "acknowledgeAlert")
        meta = ctx.meta("acknowledgeAlert", id_)
        when = at or datetime.now(UTC)

        def attempt() -> AlertOutcome | Save[AlertOutcome]:
            alert = self.get(id_)
            if alert.seen(meta):
                return AlertOutcome(alert=alert, notification_id=None, replayed=True)
            alert.acknowledge(when, meta)
            return Save((alert,), _answer(alert))

        return save_with_retry(self, attempt, f"alert {id_} is changing too fast; try again")

    def resolve(
        self, id_: UUID, note: str, ctx: CommandContext, at: datetime | None = None
    ) -> AlertOutcome:
        """Close the alert by hand with a note; the cause's next raise opens a new alert."""
        authorize(ctx.actor, "resolveAlert")
        meta = ctx.meta("resolveAlert", id_, note)
        when = at or datetime.now(UTC)
        outcome = self._close(id_, meta, lambda alert: alert.resolve(when, note, meta))
        if outcome is None:  # only auto-resolve skips closed alerts; resolve() raises on them
            raise Conflict(f"alert {id_} is already closed")
        return outcome

    def auto_resolve(
        self, dedup_key: str, evidence: Evidence, ctx: CommandContext, at: datetime | None = None
    ) -> AlertOutcome | None:
        """Close the cause's open alert because the cause cleared; ``None`` when none is open."""
        authorize(ctx.actor, "autoResolveAlert")
        meta = ctx.meta("autoResolveAlert", dedup_key)
        when = at or datetime.now(UTC)
        series = self.series(dedup_key)
        if series is None or series.open_alert is None:
            return None
        return self._close(
            series.open_alert,
            meta,
            lambda alert: alert.auto_resolve(when, evidence, meta),
            skip_if_closed=True,
        )

    # -- plumbing ------------------------------------------------------------------

    def _close(
        self,
        id_: UUID,
        meta: EventMeta,
        action: Callable[[Alert], object],
        skip_if_closed: bool = False,
    ) -> AlertOutcome | None:

        def attempt() -> AlertOutcome | Save[AlertOutcome | None] | None:
            alert = self.get(id_)
            if alert.seen(meta):
                return AlertOutcome(alert=alert, notification_id=None, replayed=True)
            if skip_if_closed and not alert.is_open:
                return None  # closed meanwhile by someone else: nothing left to clear
            action(alert)
            series = self.series(alert.dedup_key)
            if series is None:
                raise Conflict(f"alert {id_} has no series for {alert.dedup_key!r}")
            series.close(alert.generation, meta)
            return Save((alert, series), _answer(alert))

        return save_with_retry(self, attempt, f"alert {id_} is changing too fast; try again")


def _answer(alert: Alert, opened: bool = False) -> Callable[[list[Recording[UUID]]], AlertOutcome]:
    """The answer of a saved alert command: the alert and the position of its last event."""
    return lambda r: AlertOutcome(alert=alert, notification_id=last_position(r), opened=opened)
