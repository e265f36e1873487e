"""Daily interval export to JetStream (``hes.exports.intervals.<date>``) for MDM and billing."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import msgspec
from nats.aio.client import Client as NatsClient
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from adapters.nats.reading_publisher import AckedPublisher, OutgoingMessage
from adapters.nats.subjects import subject_prefix
from projections.intervals import STEP, IntervalQueries
from projections.reading_queries import Interval

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder()


class ExportReport(msgspec.Struct, frozen=True, kw_only=True):
    """One day's export: which day, which interval, how many meters, where it went."""

    day: date
    interval: str
    meters: int
    subject: str


def export_subject(prefix: str, day: date) -> str:
    """Subject of one day's interval export."""
    return f"{subject_prefix(prefix)}hes.exports.intervals.{day.isoformat()}"


async def export_day(
    pool: AsyncConnectionPool[Any],
    nc: NatsClient,
    schema: str,
    prefix: str,
    day: date,
    interval: Interval = Interval.M15,
    *,
    max_in_flight: int = 1024,
) -> ExportReport:
    """Publish every meter's intervals of ``day`` (UTC), one message per meter, and record it.

    Message ids are ``intervals:<interval>:<day>:<meter>``, so exporting a day again within
    JetStream's duplicate window stores nothing twice; consumers key on (meter, day) anyway.
    """
    queries = IntervalQueries(pool, schema)
    start = datetime.combine(day, time(0), UTC)
    end = start + timedelta(days=1)
    subject = export_subject(prefix, day)
    meters = await queries.meters_with_data(interval, start - STEP[interval], end)
    messages = []
    for meter_id, serial in meters:
        data = await queries.for_meter(meter_id, serial, interval, start, end)
        messages.append(
            OutgoingMessage(
                subject=subject,
                payload=_json.encode(data),
                msg_id=f"intervals:{interval.value}:{day.isoformat()}:{meter_id}",
            )
        )
    await AckedPublisher(nc, max_in_flight=max_in_flight).publish_all(messages)
    async with pool.connection() as conn:
        await conn.execute(
            sql.SQL(
                "INSERT INTO {}.export_runs (day, interval, meters) VALUES (%s, %s, %s) "
                "ON CONFLICT (day, interval) DO UPDATE SET meters = EXCLUDED.meters, "
                "exported_at = now()"
            ).format(sql.Identifier(schema)),
            (day, interval.value, len(messages)),
        )
    log.info("exported %d meters' %s intervals of %s to %s", len(messages), interval, day, subject)
    return ExportReport(day=day, interval=interval.value, meters=len(messages), subject=subject)


async def export_due(
    pool: AsyncConnectionPool[Any],
    nc: NatsClient,
    schema: str,
    prefix: str,
    *,
    now: datetime,
    settle: timedelta = timedelta(minutes=30),
    days_back: int = 7,
) -> list[ExportReport]:
    """Export every finished day of the last week not exported yet (catches up after downtime).

    A day is finished ``settle`` after its end, so late readings of its last minutes get in.
    """
    last_done = (now - settle).date() - timedelta(days=1)
    async with pool.connection() as conn:
        cur = await conn.execute(
            sql.SQL("SELECT day FROM {}.export_runs WHERE interval = %s AND day >= %s").format(
                sql.Identifier(schema)
            ),
            (Interval.M15.value, last_done - timedelta(days=days_back - 1)),
        )
        done = {row[0] for row in await cur.fetchall()}
    reports = []
    for offset in range(days_back - 1, -1, -1):
        day = last_done - timedelta(days=offset)
        if day not in done:
            reports.append(await export_day(pool, nc, schema, prefix, day))
    return reports
