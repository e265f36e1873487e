"""The Alert aggregate: one operational problem from raise to resolution, as immutable events.

Dedup — one OPEN alert per cause — holds without a lookup table and under concurrency:

* Every cause has a dedup key (``OVERLOAD:North``, ``COMM_FAILURE:<meter>``...). A tiny
  ``AlertSeries`` aggregate per key (id ``uuid5(key)``) counts the generations of alerts for that
  cause and names the one that is open, if any (events ``Opened(alert_id, generation)`` /
  ``Closed(generation)``).
* The n-th alert of a cause has the deterministic id ``uuid5(key + ":" + str(n))``.
* Opening saves the series' ``Opened`` and the alert's ``Raised`` in one atomic save; closing
  saves the alert's ``Resolved``/``AutoResolved`` with the series' ``Closed``. Two callers racing
  to open the same cause both write the series at the same version (and the alert at the same
  id): the event store's optimistic concurrency rejects one save whole, and the loser reloads,
  finds the open alert and records a recurrence instead. No read-then-insert gap exists, so no
  extra unique index or lock is needed, and the series' stream is the cause's full history.

The series is its own consistency boundary (not a field of the alert) because the alert of the
next generation does not exist yet when the previous one closes: something must carry the
"which generation comes next" fact across alerts.
"""

from __future__ import annotations

import enum
import math
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.domain import Aggregate, event

from domain.errors import Collector, Conflict, FieldError, ValidationFailed
from domain.idempotency import RemembersCommands
from domain.meta import EventMeta
from domain.text import check_text, refused_character
from domain.values import check_region

ALERT_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:alert")
SERIES_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:alert-series")
MAX_EVIDENCE_ITEMS = 32
MAX_NOTE_CHARS = 1000

Evidence = dict[str, str | int | float | bool | None]
"""Small JSON-able facts behind an alert (loads, counts, timestamps as ISO text)."""


class AlertType(enum.StrEnum):
    """What kind of problem an alert reports."""

    OVERLOAD = "OVERLOAD"
    ANOMALY = "ANOMALY"
    COMM_FAILURE = "COMM_FAILURE"
    OUTAGE = "OUTAGE"
    TAMPER = "TAMPER"
    THRESHOLD = "THRESHOLD"


class Severity(enum.StrEnum):
    """How bad an alert is; ordered low < medium < high < critical."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Position in the order low (0) .. critical (3)."""
        return _SEVERITY_RANK[self]

    @property
    def weight(self) -> float:
        """Priority weight: each step up doubles (1, 2, 4, 8)."""
        return float(2**self.rank)


_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}


class AlertStatus(enum.StrEnum):
    """Where an alert stands in its lifecycle."""

    OPEN = "OPEN"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    RESOLVED = "RESOLVED"


class AlertSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a detector (or operator) says about a problem when it raises an alert."""

    alert_type: AlertType
    severity: Severity
    region: str
    dedup_key: str
    message: str
    meter: UUID | None = None
    evidence: Evidence = msgspec.field(default_factory=dict)

    def check(self) -> None:
        """Raise ``ValidationFailed`` naming every field rule this spec breaks."""
        errors = Collector()
        check_region(errors, self.region)
        check_text(errors, "dedupKey", self.dedup_key, max_chars=200)
        check_text(errors, "message", self.message, max_chars=500, multiline=True)
        check_evidence(errors, self.evidence)
        errors.raise_if_any()


def check_evidence(errors: Collector, evidence: Evidence) -> None:
    """Record a broken rule if ``evidence`` is not a small, finite, JSON-able dict."""
    if len(evidence) > MAX_EVIDENCE_ITEMS:
        errors.add("evidence", "size", f"evidence has at most {MAX_EVIDENCE_ITEMS} items")
    for key, value in evidence.items():
        if not key or len(key) > 64 or refused_character(key) is not None:
            errors.add("evidence", "key", "evidence keys must be one line of 1..64 characters")
        elif isinstance(value, float) and not math.isfinite(value):
            errors.add(f"evidence.{key}", "finite", "evidence numbers must be finite")
        elif isinstance(value, str):
            check_text(
                errors, f"evidence.{key}", value, max_chars=500, required=False, multiline=True
            )


def series_id(dedup_key: str) -> UUID:
    """Deterministic id of the series of alerts for one cause."""
    return uuid5(SERIES_NAMESPACE, dedup_key)


def alert_id(dedup_key: str, generation: int) -> UUID:
    """Deterministic id of the ``generation``-th alert (from 1) for one cause."""
    return uuid5(ALERT_NAMESPACE, f"{dedup_key}:{generation}")


def priority_score(severity: Severity, age_seconds: float, customers_affected: int) -> float:
    """Priority = 10 · weight(severity) · (1 + ln(1 + age_h)) · (1 + log10(1 + customers)).

    ``weight`` is 1, 2, 4, 8 for low..critical; negative ages and counts count as 0. Each factor
    is ≥ 1 and non-decreasing, so the score is monotonic in severity, age and customers.
    """
    age_hours = max(0.0, age_seconds) / 3600.0
    customers = max(0, customers_affected)
    return (
        10.0 * severity.weight * (1.0 + math.log1p(age_hours)) * (1.0 + math.log10(1 + customers))
    )


class Alert(Aggregate, RemembersCommands):
    """One problem on the grid or the fleet, from raise to resolution."""

    class Raised(Aggregate.Created):
        """A new alert opened for a cause that had none open."""

        spec: AlertSpec
        generation: int
        at: datetime
        meta: EventMeta

    class Recurred(Aggregate.Event):
        """The same cause was seen again while the alert was still unresolved."""

        occurrences: int
        last_seen: datetime
        evidence: Evidence
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Count the occurrence and keep the latest evidence."""
            aggregate.occurrences = self.occurrences
            aggregate.last_seen = self.last_seen
            aggregate.evidence = self.evidence
            aggregate.remember(self.meta)

    class Escalated(Aggregate.Event):
        """A recurrence came with a higher severity than the alert had."""

        severity: Severity
        previous: Severity
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Raise the alert's severity."""
            aggregate.severity = self.severity
            aggregate.remember(self.meta)

    class Acknowledged(Aggregate.Event):
        """An operator took ownership of the alert."""

        by: str
        at: datetime
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the alert acknowledged."""
            aggregate.status = AlertStatus.ACKNOWLEDGED
            aggregate.acknowledged_by = self.by
            aggregate.acknowledged_at = self.at
            aggregate.remember(self.meta)

    class Resolved(Aggregate.Event):
        """An operator closed the alert."""

        by: str
        at: datetime
        note: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Close the alert by hand."""
            aggregate.status = AlertStatus.RESOLVED
            aggregate.resolved_by = self.by
            aggregate.resolved_at = self.at
            aggregate.resolution_note = self.note
            aggregate.remember(self.meta)

    class AutoResolved(Aggregate.Event):
        """The alert's cause cleared and the system closed it."""

        at: datetime
        evidence: Evidence
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Close the alert because its cause went away."""
            aggregate.status = AlertStatus.RESOLVED
            aggregate.resolved_by = self.meta.actor
            aggregate.resolved_at = self.at
            aggregate.auto_resolved = True
            aggregate.clear_evidence = self.evidence
            aggregate.remember(self.meta)

    @staticmethod
    def create_id(spec: AlertSpec, generation: int, at: datetime, meta: EventMeta) -> UUID:
        """Derive the id from the dedup key and generation, so each cause has one open alert."""
        return alert_id(spec.dedup_key, generation)

    @classmethod
    def open(cls, spec: AlertSpec, generation: int, at: datetime, meta: EventMeta) -> Alert:
        """Raise the ``generation``-th alert for a cause after checking every field rule."""
        spec.check()
        if generation < 1:
            raise ValidationFailed([_field_error("generation", "range", "generation starts at 1")])
        return cls(spec=spec, generation=generation, at=at, meta=meta)

    @event(Raised)
    def __init__(self, spec: AlertSpec, generation: int, at: datetime, meta: EventMeta) -> None:
        self.alert_type = spec.alert_type
        self.severity = spec.severity
        self.region = spec.region
        self.meter = spec.meter
        self.message = spec.message
        self.dedup_key = spec.dedup_key
        self.evidence = dict(spec.evidence)
        self.generation = generation
        self.status = AlertStatus.OPEN
        self.raised_at = at
        self.last_seen = at
        self.occurrences = 1
        self.acknowledged_by: str | None = None
        self.acknowledged_at: datetime | None = None
        self.resolved_by: str | None = None
        self.resolved_at: datetime | None = None
        self.resolution_note: str | None = None
        self.auto_resolved = False
        self.clear_evidence: Evidence | None = None
        self.commands: dict[str, str | None] = {}
        self.remember(meta)

    @property
    def is_open(self) -> bool:
        """True until the alert is resolved (by hand or automatically)."""
        return self.status is not AlertStatus.RESOLVED

    def _ensure_open(self, action: str) -> None:
        if self.status is AlertStatus.RESOLVED:
            raise Conflict(f"alert {self.id} is resolved: cannot {action}")

    # -- commands ----------------------------------------------------------------------

    def recur(self, at: datetime, evidence: Evidence, severity: Severity, meta: EventMeta) -> None:
        """Count another occurrence of the cause; escalate when ``severity`` is higher."""
        self._ensure_open("record a recurrence")
        errors = Collector()
        check_evidence(errors, evidence)
        errors.raise_if_any()
        self.trigger_event(
            self.Recurred,
            occurrences=self.occurrences + 1,
            last_seen=max(at, self.last_seen),
            evidence=dict(evidence),
            meta=meta,
        )
        if severity.rank > self.severity.rank:
            self.trigger_event(self.Escalated, severity=severity, previous=self.severity, meta=meta)

    def acknowledge(self, at: datetime, meta: EventMeta) -> None:
        """Record that ``meta.actor`` took ownership of the alert."""
        self._ensure_open("acknowledge it")
        if self.status is AlertStatus.ACKNOWLEDGED:
            raise Conflict(f"alert {self.id} was already acknowledged by {self.acknowledged_by}")
        self.trigger_event(self.Acknowledged, by=meta.actor, at=at, meta=meta)

    def resolve(self, at: datetime, note: str, meta: EventMeta) -> None:
        """Close the alert by hand with a note (free text, may be empty)."""
        self._ensure_open("resolve it again")
        errors = Collector()
        check_text(errors, "note", note, max_chars=MAX_NOTE_CHARS, required=False, multiline=True)
        errors.raise_if_any()
        self.trigger_event(self.Resolved, by=meta.actor, at=at, note=note, meta=meta)

    def auto_resolve(self, at: datetime, evidence: Evidence, meta: EventMeta) -> None:
        """Close the alert because its cause cleared."""
        self._ensure_open("auto-resolve it")
        errors = Collector()
        check_evidence(errors, evidence)
        errors.raise_if_any()
        self.trigger_event(self.AutoResolved, at=at, evidence=dict(evidence), meta=meta)

    # -- queries -----------------------------------------------------------------------

    def priority(self, now: datetime, customers_affected: int) -> float:
        """Ranking score from severity, age since raised and customers affected."""
        age = (now - self.raised_at).total_seconds()
        return priority_score(self.severity, age, customers_affected)


class AlertSeries(Aggregate):
    """The alerts of one cause (dedup key): which generation is open, if any."""

    class Started(Aggregate.Created):
        """The first alert for this cause is about to open."""

        dedup_key: str
        meta: EventMeta

    class Opened(Aggregate.Event):
        """The ``generation``-th alert of this cause opened."""

        alert_id: UUID
        generation: int
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Point the series at its open alert."""
            aggregate.generation = self.generation
            aggregate.open_alert = self.alert_id

    class Closed(Aggregate.Event):
        """The ``generation``-th alert of this cause was resolved."""

        generation: int
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Forget the open alert; the next raise opens a new generation."""
            aggregate.open_alert = None

    @staticmethod
    def create_id(dedup_key: str, meta: EventMeta) -> UUID:
        """Derive the id from the dedup key."""
        return series_id(dedup_key)

    @event(Started)
    def __init__(self, dedup_key: str, meta: EventMeta) -> None:
        self.dedup_key = dedup_key
        self.generation = 0
        self.open_alert: UUID | None = None

    def open_next(self, meta: EventMeta) -> tuple[UUID, int]:
        """Open the next generation; refused while one is open. Returns (alert id, generation)."""
        if self.open_alert is not None:
            raise Conflict(f"cause {self.dedup_key!r} already has open alert {self.open_alert}")
        generation = self.generation + 1
        id_ = alert_id(self.dedup_key, generation)
        self.trigger_event(self.Opened, alert_id=id_, generation=generation, meta=meta)
        return id_, generation

    def close(self, generation: int, meta: EventMeta) -> None:
        """Close the open generation; refused when it is not the one open."""
        if self.open_alert is None or generation != self.generation:
            raise Conflict(f"cause {self.dedup_key!r} has no open alert of generation {generation}")
        self.trigger_event(self.Closed, generation=generation, meta=meta)


def _field_error(field: str, rule: str, message: str) -> FieldError:
    return FieldError(field, rule, message)
