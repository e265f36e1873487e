"""Audit reads over the event store: an aggregate's recorded history and its state in the past.

Read-only: nothing here writes. Callers check ``commands.policy.authorize_audit`` first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.postgres import PostgresAggregateRecorder
from psycopg import sql

from commands.meters import MeterRegistry
from domain.errors import FieldError, NotFound, ValidationFailed
from domain.meta import EventMeta
from domain.meter import Meter, meter_id

Event = CanMutateAggregate[UUID]
MAX_HISTORY = 5000
# Event attributes that the entry shows in its own fields, or that are library plumbing.
_NOT_PAYLOAD = frozenset(
    {"originator_id", "originator_version", "timestamp", "meta", "originator_topic"}
)


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded event, as an auditor reads it."""

    position: int | None
    """Notification id: the event's place in the store's global order (None on stores without)."""
    aggregate_id: UUID
    version: int
    type: str
    time: datetime
    actor: str | None
    """Subject of the command's caller (None only for an event recorded without metadata)."""
    correlation_id: str | None
    idempotency_key: str | None
    payload: dict[str, Any]
    """The event's own fields as stored (JSON-able), without its metadata."""


def resolve_id(value: str) -> UUID:
    """Aggregate id from a UUID, or the meter id of a serial number."""
    try:
        return UUID(value)
    except ValueError:
        return meter_id(value)


def history(
    registry: MeterRegistry,
    aggregate_id: UUID,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 500,
) -> list[AuditEntry]:
    """The aggregate's events with ``start <= time < end``, oldest first, at most ``limit``."""
    errors: list[FieldError] = []
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.tzinfo is None:
            errors.append(FieldError(name, "timezone", f"{name} must have a UTC offset"))
    if start is not None and end is not None and not errors and end <= start:
        errors.append(FieldError("to", "order", "to must be after from"))
    if not 1 <= limit <= MAX_HISTORY:
        errors.append(FieldError("first", "range", f"must be between 1 and {MAX_HISTORY}"))
    if errors:
        raise ValidationFailed(errors)
    events = _events(registry, aggregate_id)
    if not events:
        raise NotFound(f"no aggregate with id {aggregate_id}")
    chosen = [
        e
        for e in events
        if (start is None or e.timestamp >= start) and (end is None or e.timestamp < end)
    ][:limit]
    positions = _positions(registry, aggregate_id, chosen)
    return [_entry(e, positions.get(e.originator_version)) for e in chosen]


def state_at(
    registry: MeterRegistry,
    aggregate_id: UUID,
    *,
    at: datetime | None = None,
    version: int | None = None,
) -> Meter:
    """The meter as it was at a moment (its last event at or before ``at``) or at a version."""
    exactly_one = ValidationFailed(
        [FieldError("at", "exclusive", "give exactly one of at or version")]
    )
    if version is None:
        if at is None:
            raise exactly_one
        version = _version_at(registry, aggregate_id, at)
    elif at is not None:
        raise exactly_one
    elif version < 1:
        raise ValidationFailed([FieldError("version", "range", "version must be 1 or more")])
    try:
        meter: object = registry.repository.get(aggregate_id, version=version)
    except AggregateNotFoundError:
        raise NotFound(f"no aggregate with id {aggregate_id}") from None
    if not isinstance(meter, Meter):
        raise NotFound(f"aggregate {aggregate_id} is not a meter")
    if meter.version < version:
        raise NotFound(f"meter {aggregate_id} has no version {version} (latest {meter.version})")
    return meter


def _version_at(registry: MeterRegistry, aggregate_id: UUID, at: datetime) -> int:
    if at.tzinfo is None:
        raise ValidationFailed([FieldError("at", "timezone", "at must have a UTC offset")])
    events = _events(registry, aggregate_id)
    found: int | None = None
    for e in events:
        if e.timestamp <= at:
            found = e.originator_version
    if not events:
        raise NotFound(f"no aggregate with id {aggregate_id}")
    if found is None:
        raise NotFound(f"aggregate {aggregate_id} did not exist yet at {at.isoformat()}")
    return found


def _events(registry: MeterRegistry, aggregate_id: UUID) -> list[Event]:
    # The store only holds aggregate events, which all carry a timestamp.
    return cast("list[Event]", list(registry.events.get(aggregate_id)))


def _entry(event: Event, position: int | None) -> AuditEntry:
    state = vars(event)
    meta = state.get("meta")
    known = meta if isinstance(meta, EventMeta) else None
    return AuditEntry(
        position=position,
        aggregate_id=event.originator_id,
        version=event.originator_version,
        type=type(event).__name__,
        time=event.timestamp,
        actor=known.actor if known else None,
        correlation_id=known.correlation_id if known else None,
        idempotency_key=known.idempotency_key if known else None,
        payload=msgspec.to_builtins({k: v for k, v in state.items() if k not in _NOT_PAYLOAD}),
    )


def _positions(registry: MeterRegistry, aggregate_id: UUID, events: list[Event]) -> dict[int, int]:
    """Notification ids of the events, by version: one primary-key range read.

    The library's ``select_events`` drops the notification id column, so it is read here
    directly; stores other than PostgreSQL (in-memory in unit tests) give no positions.
    """
    recorder = registry.recorder
    if not events or not isinstance(recorder, PostgresAggregateRecorder):
        return {}
    statement = sql.SQL(
        "SELECT originator_version, notification_id FROM {}.{}"
        " WHERE originator_id = %s AND originator_version BETWEEN %s AND %s"
    ).format(sql.Identifier(recorder.datastore.schema), sql.Identifier(recorder.events_table_name))
    first, last = events[0].originator_version, events[-1].originator_version
    with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
        cursor.execute(statement, (aggregate_id, first, last))
        return {row["originator_version"]: row["notification_id"] for row in cursor.fetchall()}
