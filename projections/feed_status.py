"""Where every event-store projection and relay stands: position, lag, state, and skipping.

A *feed* is anything that follows one event log in order and tracks its position in a tracking
table: the read-model projections and the relays to HES_EVENTS. Each supervisor writes its
state to ``projection_status`` when it changes (running, stalled at a position, stopped), so
that any process (the API's readiness probe, ``hes projections status``) sees it; positions and
lags are read from the tracking tables and event logs themselves.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from projections.alerts_projection import AlertsProjection
from projections.customers_projection import CustomersProjection
from projections.dlms_projection import DlmsProjection
from projections.fleet_projection import FleetProjection
from projections.meters_projection import MetersProjection
from projections.sims_projection import SimsProjection
from projections.tariffs_projection import TariffsProjection

RELAY_TRACKING = "event_relay_tracking"
MAX_ERROR = 1000


class Feed(msgspec.Struct, frozen=True, kw_only=True):
    """A follower of one event log: its name, the log, its tracking table and event topics."""

    name: str
    log: str
    """Application (event log) it follows: meters, tariffs, alerts."""
    tracking_table: str
    topics: tuple[str, ...] = ()
    """Topics it is given (empty: every event of the log)."""

    @property
    def events_table(self) -> str:
        """The log's event table."""
        return f"{self.log}_events"


def _view(projection: Any, log: str) -> Feed:
    return Feed(
        name=projection.name,
        log=log,
        tracking_table=f"{projection.name}_tracking",
        topics=tuple(projection.topics),
    )


FEEDS: tuple[Feed, ...] = (
    _view(MetersProjection, "meters"),
    _view(TariffsProjection, "tariffs"),
    _view(AlertsProjection, "alerts"),
    _view(DlmsProjection, "meters"),
    _view(SimsProjection, "sims"),
    _view(CustomersProjection, "customers"),
    _view(FleetProjection, "fleet"),
    *(
        Feed(name=f"event_relay_{log}", log=log, tracking_table=RELAY_TRACKING)
        for log in ("meters", "tariffs", "alerts", "sims", "customers", "fleet")
    ),
)
BY_NAME = {feed.name: feed for feed in FEEDS}


def relay_feed(log: str) -> Feed:
    """The feed of the relay of ``log`` to HES_EVENTS."""
    return BY_NAME[f"event_relay_{log}"]


class State(enum.StrEnum):
    """What a feed's supervisor last said."""

    RUNNING = "running"
    STALLED = "stalled"
    STOPPED = "stopped"


class EventRef(msgspec.Struct, frozen=True, kw_only=True):
    """One stored event, as a stall or a skip names it."""

    position: int
    aggregate_id: UUID
    version: int
    topic: str

    @property
    def event_id(self) -> UUID:
        """Its CloudEvents id (the id integrators see on HES_EVENTS)."""
        from adapters.nats.cloudevents import event_id

        return event_id(self.aggregate_id, self.version)


class Stall(msgspec.Struct, frozen=True, kw_only=True):
    """Where a feed failed and why."""

    position: int | None
    event_id: UUID | None = None
    topic: str | None = None
    error: str

    def describe(self) -> str:
        """One line for logs and probes."""
        where = (
            "at an unknown position" if self.position is None else f"at position {self.position}"
        )
        event = f" (event {self.event_id}, {self.topic})" if self.event_id else ""
        return f"{where}{event}: {self.error}"


class FeedStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A feed as the probe and the CLI show it."""

    name: str
    log: str
    position: int
    """Position (notification id) of the last event applied or relayed."""
    lag: int
    """Events of its topics recorded after ``position`` (counted up to the probe's cap)."""
    state: str
    """running, stalled, stopped, or unknown (no supervisor ever reported)."""
    since: datetime | None = None
    failures: int = 0
    """Failures in the current streak (stalled) or the last one."""
    stall: Stall | None = None

    @property
    def stalled(self) -> bool:
        """True while stuck at an event it has not got past."""
        return (
            self.state == State.STALLED
            and self.stall is not None
            and (self.stall.position is None or self.stall.position > self.position)
        )


def _topics_filter(feed: Feed) -> sql.Composable:
    if not feed.topics:
        return sql.SQL("true")
    return sql.SQL("e.topic = ANY({})").format(sql.Literal(list(feed.topics)))


def _tracked(schema: str, feed: Feed) -> sql.Composed:
    return sql.SQL(
        "coalesce((SELECT t.notification_id FROM {}.{} t WHERE t.application_name = {}), 0)"
    ).format(sql.Identifier(schema), sql.Identifier(feed.tracking_table), sql.Literal(feed.log))


def positions_query(schema: str, feeds: Sequence[Feed], cap: int) -> sql.Composed:
    """One query: every feed's name, position and lag (lag counted up to ``cap``)."""
    parts = [
        sql.SQL(
            "SELECT {name} AS name, p.position, (SELECT count(*) FROM (SELECT 1 FROM {events} e "
            "WHERE e.notification_id > p.position AND {topics} LIMIT {cap}) x) AS lag "
            "FROM (SELECT {tracked} AS position) p"
        ).format(
            name=sql.Literal(feed.name),
            events=sql.Identifier(schema, feed.events_table),
            topics=_topics_filter(feed),
            cap=sql.Literal(cap),
            tracked=_tracked(schema, feed),
        )
        for feed in feeds
    ]
    return sql.SQL(" UNION ALL ").join(parts)


def _status_query(schema: str) -> sql.Composed:
    return sql.SQL(
        "SELECT name, state, since, failures, failed_position, failed_event, failed_topic, error "
        "FROM {}.projection_status"
    ).format(sql.Identifier(schema))


def _stall(row: dict[str, Any]) -> Stall | None:
    if not row.get("error"):
        return None
    return Stall(
        position=row["failed_position"],
        event_id=row["failed_event"],
        topic=row["failed_topic"],
        error=row["error"],
    )


def _combine(
    feeds: Sequence[Feed], positions: list[dict[str, Any]], states: list[dict[str, Any]]
) -> list[FeedStatus]:
    by_name = {row["name"]: row for row in states}
    found = {row["name"]: row for row in positions}
    return [
        FeedStatus(
            name=feed.name,
            log=feed.log,
            position=int(found[feed.name]["position"]),
            lag=int(found[feed.name]["lag"]),
            state=by_name.get(feed.name, {}).get("state", "unknown"),
            since=by_name.get(feed.name, {}).get("since"),
            failures=by_name.get(feed.name, {}).get("failures", 0),
            stall=_stall(by_name.get(feed.name, {})),
        )
        for feed in feeds
    ]


def reported(states: list[dict[str, Any]], name: str, position: int, lag: int) -> FeedStatus:
    """The status of a part outside the event logs (the notifier), at a position it knows."""
    row = next((r for r in states if r["name"] == name), {})
    return FeedStatus(
        name=name,
        log="HES_EVENTS",
        position=position,
        lag=lag,
        state=row.get("state", "unknown"),
        since=row.get("since"),
        failures=row.get("failures", 0),
        stall=_stall(row),
    )


async def read_states(pool: AsyncConnectionPool[Any], schema: str) -> list[dict[str, Any]]:
    """Every row of ``projection_status``."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_status_query(schema))
        rows: list[dict[str, Any]] = await cur.fetchall()
    return rows


async def read_statuses(
    pool: AsyncConnectionPool[Any],
    schema: str,
    cap: int,
    states: list[dict[str, Any]],
    feeds: Sequence[Feed] = FEEDS,
) -> list[FeedStatus]:
    """Every feed's status (for the readiness probe), given the ``projection_status`` rows."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(positions_query(schema, feeds, cap))
        positions = await cur.fetchall()
    return _combine(feeds, positions, states)


def statuses(
    conn: psycopg.Connection[Any], schema: str, cap: int, feeds: Sequence[Feed] = FEEDS
) -> tuple[list[FeedStatus], list[dict[str, Any]]]:
    """Every feed's status and every ``projection_status`` row (``hes projections status``)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(positions_query(schema, feeds, cap))
        positions = cur.fetchall()
        cur.execute(_status_query(schema))
        states = cur.fetchall()
    return _combine(feeds, positions, states), states


def report(
    conn: psycopg.Connection[Any], schema: str, name: str, state: State, **fields: Any
) -> None:
    """Record a supervisor's state change (stall details with ``stall=``, ``failures=``)."""
    stall: Stall | None = fields.get("stall")
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.projection_status AS s (name, state, since, failures, failed_position,"
            " failed_event, failed_topic, error) VALUES (%(name)s, %(state)s, now(), %(failures)s,"
            " %(position)s, %(event)s, %(topic)s, %(error)s) ON CONFLICT (name) DO UPDATE SET"
            " state = EXCLUDED.state, since = EXCLUDED.since, failures = EXCLUDED.failures,"
            " failed_position = coalesce(EXCLUDED.failed_position, s.failed_position),"
            " failed_event = coalesce(EXCLUDED.failed_event, s.failed_event),"
            " failed_topic = coalesce(EXCLUDED.failed_topic, s.failed_topic),"
            " error = coalesce(EXCLUDED.error, s.error)"
        ).format(sql.Identifier(schema)),
        {
            "name": name,
            "state": state.value,
            "failures": fields.get("failures", 0),
            "position": stall.position if stall else None,
            "event": stall.event_id if stall else None,
            "topic": stall.topic if stall else None,
            "error": stall.error[:MAX_ERROR] if stall else None,
        },
    )


def next_event(conn: psycopg.Connection[Any], schema: str, feed: Feed) -> EventRef | None:
    """The event the feed applies next (the first of its topics after its position)."""
    row = conn.execute(
        sql.SQL(
            "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic FROM {} e "
            "WHERE e.notification_id > {} AND {} ORDER BY e.notification_id LIMIT 1"
        ).format(
            sql.Identifier(schema, feed.events_table),
            _tracked(schema, feed),
            _topics_filter(feed),
        )
    ).fetchone()
    if row is None:
        return None
    return EventRef(position=row[0], aggregate_id=row[1], version=row[2], topic=row[3])


def topic_name(topic: str) -> str:
    """``domain.meter:Meter.Registered`` → ``Meter.Registered``."""
    return topic.rpartition(":")[2]


class SkipRefused(ValueError):
    """The position given is not the event the feed is stuck at."""


def move_past(conn: psycopg.Connection[Any], schema: str, feed: Feed, position: int) -> EventRef:
    """Move the feed's tracking past ``position``, which must be the event it applies next."""
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (application_name, notification_id) VALUES (%s, 0) "
                "ON CONFLICT (application_name) DO NOTHING"
            ).format(sql.Identifier(schema, feed.tracking_table)),
            (feed.log,),
        )
        conn.execute(
            sql.SQL("SELECT 1 FROM {} WHERE application_name = %s FOR UPDATE").format(
                sql.Identifier(schema, feed.tracking_table)
            ),
            (feed.log,),
        )
        upcoming = check_next(conn, schema, feed, position)
        conn.execute(
            sql.SQL(
                "UPDATE {} SET notification_id = %s WHERE application_name = %s "
                "AND notification_id < %s"
            ).format(sql.Identifier(schema, feed.tracking_table)),
            (position, feed.log, position),
        )
    return upcoming


def check_next(conn: psycopg.Connection[Any], schema: str, feed: Feed, position: int) -> EventRef:
    """The feed's next event, which must be at ``position``; else ``SkipRefused`` says why."""
    upcoming = next_event(conn, schema, feed)
    if upcoming is None:
        raise SkipRefused(f"{feed.name} has applied every event of the {feed.log} log")
    if upcoming.position != position:
        raise SkipRefused(
            f"{feed.name} applies position {upcoming.position} next "
            f"({topic_name(upcoming.topic)}); only that event can be skipped"
        )
    return upcoming
