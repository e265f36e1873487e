"""Audit reads over the event stores: an aggregate's recorded history and its state in the past.

Every application (meters, tariffs, alerts) keeps its own log; ``locate`` finds the one that
holds an aggregate. Read-only: nothing here writes. Callers check
``commands.policy.authorize_audit`` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, CanMutateAggregate
from eventsourcing.postgres import PostgresAggregateRecorder
from psycopg import sql

from commands.audit_verify import LOGS
from domain.alert import series_id
from domain.api_key import api_key_id
from domain.customer import customer_id
from domain.errors import FieldError, NotFound, ValidationFailed
from domain.meta import EventMeta
from domain.meter import Meter, meter_id
from domain.projection_ledger import ledger_id
from domain.region import region_id
from domain.sim_card import sim_id, slot_id
from domain.tariff import tariff_id

Event = CanMutateAggregate[UUID]
App = Application[UUID]
MAX_HISTORY = 5000
# Event attributes that the entry shows in its own fields, or that are library plumbing.
_NOT_PAYLOAD = frozenset(
    {"originator_id", "originator_version", "timestamp", "meta", "originator_topic"}
)
# Aggregate attributes that are plumbing: the idempotency keys remembered (RemembersCommands).
_NOT_STATE = frozenset({"commands"})


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded event, as an auditor reads it."""

    position: int | None
    """Notification id: the event's place in its log's order (None on stores without)."""
    log: str
    """The application whose log holds the event: meters, tariffs or alerts."""
    aggregate_type: str
    """Class of the aggregate, e.g. Meter, Tariff, Alert, AlertSeries."""
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


class AggregateState(msgspec.Struct, frozen=True, kw_only=True):
    """Any aggregate's state at one version, as JSON-able fields."""

    log: str
    aggregate_type: str
    aggregate_id: UUID
    version: int
    created_on: datetime
    modified_on: datetime
    """Time of the event of this version."""
    state: dict[str, Any]
    """The aggregate's own attributes (snake_case), without library and idempotency plumbing."""


def resolve_id(value: str) -> UUID:
    """Aggregate id from a UUID, or the meter id of a serial number."""
    try:
        return UUID(value)
    except ValueError:
        return meter_id(value)


def candidates(value: str) -> list[tuple[str, UUID]]:
    """Where a caller's id may be, as (log, aggregate id), in the order ``locate`` tries them.

    A UUID may be in any log; other text is a meter serial, a tariff region (its tariff, else
    the region's capacity settings), an alert dedup key (naming the series of alerts of one
    cause), an API key's prefix or a projection's name (its ledger of skipped events in the
    operations log).
    """
    try:
        id_ = UUID(value)
    except ValueError:
        return [
            ("meters", meter_id(value)),
            ("tariffs", tariff_id(value)),
            ("tariffs", region_id(value)),
            ("alerts", series_id(value)),
            ("api_keys", api_key_id(value)),
            ("sims", sim_id(value)),
            ("sims", slot_id(value)),
            ("operations", ledger_id(value)),
            ("customers", customer_id(value)),
        ]
    return [(log, id_) for log in LOGS]


def locate(apps: Sequence[App], value: str) -> tuple[App, UUID]:
    """The application holding the aggregate named by ``value`` (see ``candidates``), and its id."""
    by_log = {app.name: app for app in apps}
    for log, id_ in candidates(value):
        app = by_log.get(log)
        if app is not None and app.recorder.select_events(id_, limit=1):
            return app, id_
    raise NotFound(f"no aggregate with id {value}")


def history(
    app: App,
    aggregate_id: UUID,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 500,
) -> list[AuditEntry]:
    """The aggregate's events with ``start <= time < end``, oldest first, at most ``limit``."""
    _check_window(start, end, limit)
    events = _events(app, aggregate_id)
    if not events:
        raise NotFound(f"no aggregate with id {aggregate_id}")
    chosen = [
        e
        for e in events
        if (start is None or e.timestamp >= start) and (end is None or e.timestamp < end)
    ][:limit]
    positions = _positions(app, aggregate_id, chosen)
    kind = _aggregate_type(events[0])
    return [_entry(app.name, kind, e, positions.get(e.originator_version)) for e in chosen]


def history_of(
    apps: Sequence[App],
    value: str,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 500,
) -> list[AuditEntry]:
    """``history`` of the aggregate named by ``value`` in whichever log holds it."""
    _check_window(start, end, limit)
    app, id_ = locate(apps, value)
    return history(app, id_, start, end, limit)


def _check_window(start: datetime | None, end: datetime | None, limit: int) -> None:
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


def state_at(
    registry: App,
    aggregate_id: UUID,
    *,
    at: datetime | None = None,
    version: int | None = None,
) -> Meter:
    """The meter as it was at a moment (its last event at or before ``at``) or at a version."""
    meter = aggregate_at(registry, aggregate_id, at=at, version=version)
    if not isinstance(meter, Meter):
        raise NotFound(f"aggregate {aggregate_id} is not a meter")
    return meter


def aggregate_at(
    app: App,
    aggregate_id: UUID,
    *,
    at: datetime | None = None,
    version: int | None = None,
) -> Aggregate:
    """Any aggregate as it was at a moment (its last event at or before ``at``) or a version."""
    _check_moment(at, version)
    if version is None:
        assert at is not None
        version = _version_at(app, aggregate_id, at)
    try:
        found: object = app.repository.get(aggregate_id, version=version)
    except AggregateNotFoundError:
        raise NotFound(f"no aggregate with id {aggregate_id}") from None
    if not isinstance(found, Aggregate):
        raise NotFound(f"{aggregate_id} is not an aggregate")
    if found.version < version:
        name = type(found).__name__.lower()
        raise NotFound(f"{name} {aggregate_id} has no version {version} (latest {found.version})")
    return found


def state_of(
    apps: Sequence[App],
    value: str,
    *,
    at: datetime | None = None,
    version: int | None = None,
) -> AggregateState:
    """The state of the aggregate named by ``value``, in whichever log holds it, at or as of."""
    _check_moment(at, version)
    app, id_ = locate(apps, value)
    return snapshot(app.name, aggregate_at(app, id_, at=at, version=version))


def _check_moment(at: datetime | None, version: int | None) -> None:
    if (at is None) == (version is None):
        raise ValidationFailed([FieldError("at", "exclusive", "give exactly one of at or version")])
    if version is not None and version < 1:
        raise ValidationFailed([FieldError("version", "range", "version must be 1 or more")])
    if at is not None and at.tzinfo is None:
        raise ValidationFailed([FieldError("at", "timezone", "at must have a UTC offset")])


def snapshot(log: str, aggregate: Aggregate) -> AggregateState:
    """The aggregate's state as JSON-able fields, for reading (never for rebuilding)."""
    fields = {
        k: v for k, v in vars(aggregate).items() if not k.startswith("_") and k not in _NOT_STATE
    }
    return AggregateState(
        log=log,
        aggregate_type=type(aggregate).__name__,
        aggregate_id=aggregate.id,
        version=aggregate.version,
        created_on=aggregate.created_on,
        modified_on=aggregate.modified_on,
        state=msgspec.to_builtins(fields),
    )


def _version_at(app: App, aggregate_id: UUID, at: datetime) -> int:
    events = _events(app, aggregate_id)
    found: int | None = None
    for e in events:
        if e.timestamp <= at:
            found = e.originator_version
    if not events:
        raise NotFound(f"no aggregate with id {aggregate_id}")
    if found is None:
        raise NotFound(f"aggregate {aggregate_id} did not exist yet at {at.isoformat()}")
    return found


def _events(app: App, aggregate_id: UUID) -> list[Event]:
    # The store only holds aggregate events, which all carry a timestamp.
    return cast("list[Event]", list(app.events.get(aggregate_id)))


def _aggregate_type(first: Event) -> str:
    """The aggregate's class name, from the topic its creation event records."""
    topic = getattr(first, "originator_topic", None)
    if isinstance(topic, str):
        return topic.rpartition(":")[2].rpartition(".")[2]
    return type(first).__qualname__.partition(".")[0]


def _entry(log: str, kind: str, event: Event, position: int | None) -> AuditEntry:
    state = vars(event)
    meta = state.get("meta")
    known = meta if isinstance(meta, EventMeta) else None
    return AuditEntry(
        position=position,
        log=log,
        aggregate_type=kind,
        aggregate_id=event.originator_id,
        version=event.originator_version,
        type=type(event).__name__,
        time=event.timestamp,
        actor=known.actor if known else None,
        correlation_id=known.correlation_id if known else None,
        idempotency_key=known.idempotency_key if known else None,
        payload=msgspec.to_builtins({k: v for k, v in state.items() if k not in _NOT_PAYLOAD}),
    )


def _positions(app: App, aggregate_id: UUID, events: list[Event]) -> dict[int, int]:
    """Notification ids of the events, by version: one primary-key range read.

    The library's ``select_events`` drops the notification id column, so it is read here
    directly; stores other than PostgreSQL (in-memory in unit tests) give no positions.
    """
    recorder = app.recorder
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
