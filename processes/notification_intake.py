"""Turns relayed alert and tariff events into pending deliveries, one transaction per batch.

Only ``Alert.Raised`` (and ``Escalated``) say which type, severity, region and meter an alert
has, and only ``Tariff.Created`` names a tariff's region and currency; the later events carry
the aggregate id alone. So the intake keeps a small index of its own
(``notification_alert_index``, ``notification_tariff_index``), filled from those events as they
pass — HES_EVENTS is in event-store order, so an alert's ``Raised`` comes before anything else
about it. Index rows remember the aggregate version that set them, so a redelivered older event
never overwrites newer facts.

Index updates and the new ``notification_deliveries`` rows (unique per event and subscription)
commit together; the caller acknowledges the messages only after that commit. A redelivered
message therefore changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from adapters.notify.metrics import QUEUED, UNMATCHED
from commands.notification_subscriptions import subscription_row
from domain.alert import AlertSpec, AlertType, Severity
from domain.notifications import (
    AlertFacts,
    EventKind,
    Notable,
    NotificationBody,
    Subscription,
    TariffFacts,
    Visibility,
    kind_of,
    matches,
    summary,
)

log = logging.getLogger(__name__)

DELIVERY_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:notification-delivery")


class IncomingEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The parts of a relayed CloudEvent the notifier reads."""

    id: UUID
    type: str
    subject: UUID
    time: datetime
    aggregateversion: int
    actor: str | None = None
    data: dict[str, msgspec.Raw] = {}


class Pending(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery to insert."""

    id: UUID
    event_id: UUID
    subscription_id: UUID
    kind: EventKind
    event_type: str
    event_time: datetime
    body: bytes
    channel: str


_incoming = msgspec.json.Decoder(IncomingEvent)
_spec = msgspec.json.Decoder(AlertSpec)
_severity = msgspec.json.Decoder(Severity)
_text = msgspec.json.Decoder(str)
_by = msgspec.json.Decoder(str | None)
_encoder = msgspec.json.Encoder()
_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
INTERNAL_ENVELOPE = frozenset({"actor", "correlationid"})
INTERNAL_TARIFF_DATA = frozenset({"reason", "author"})
"""Parts of a tariff event only staff are told: who issued it, and an override's why and who."""


def delivery_id(event_id: UUID, subscription_id: UUID) -> UUID:
    """Deterministic id of the delivery of one event to one subscription."""
    return uuid5(DELIVERY_NAMESPACE, f"{event_id}:{subscription_id}")


class NotificationIntake:
    """Indexes alert and tariff events and queues a delivery per matching subscription."""

    def __init__(self, pool: AsyncConnectionPool[Any], schema: str) -> None:
        self.pool = pool
        self.schema = sql.Identifier(schema)

    async def take(self, payloads: Sequence[bytes]) -> int:
        """Index the events and insert their deliveries in one transaction; return how many."""
        decoded = [(e, p) for p in payloads if (e := _decode(p)) is not None]
        if not decoded:
            return 0
        events = [e for e, _ in decoded]
        originals = {e.id: p for e, p in decoded}
        async with self.pool.connection() as conn, conn.transaction():
            alerts = await self._alert_index(
                conn, {e.subject for e in events if _agg(e) == "alert"}
            )
            tariffs = await self._tariff_index(
                conn, {e.subject for e in events if _agg(e) == "tariff"}
            )
            touched_alerts: set[UUID] = set()
            touched_tariffs: set[UUID] = set()
            notable: list[tuple[IncomingEvent, Notable, AlertFacts | None, TariffFacts | None]] = []
            for event in events:
                item = _index(event, alerts, tariffs, touched_alerts, touched_tariffs)
                if item is not None:
                    notable.append((event, *item))
            await self._save_index(conn, alerts, touched_alerts, tariffs, touched_tariffs)
            if not notable:
                return 0
            subscriptions = await self._subscriptions(conn, {n.kind for _, n, _, _ in notable})
            visibility = await self._visibility(conn, subscriptions)
            pending = [
                _pending(event, originals[event.id], n, alert, tariff, sub)
                for event, n, alert, tariff in notable
                for sub in subscriptions
                if matches(sub, visibility[sub.id], n)
            ]
            inserted = await self._insert(conn, pending, {s.id: s for s in subscriptions})
        return inserted

    async def _alert_index(
        self, conn: AsyncConnection[Any], ids: set[UUID]
    ) -> dict[UUID, tuple[AlertFacts, int]]:
        if not ids:
            return {}
        query = sql.SQL(
            "SELECT alert_id, alert_type, severity, region, meter_id, message, version "
            "FROM {}.notification_alert_index WHERE alert_id = ANY(%s)"
        ).format(self.schema)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, (list(ids),))
            rows = await cur.fetchall()
        return {
            r["alert_id"]: (
                AlertFacts(
                    id=r["alert_id"],
                    alert_type=AlertType(r["alert_type"]),
                    severity=Severity(r["severity"]),
                    region=r["region"],
                    meter=r["meter_id"],
                    message=r["message"],
                ),
                r["version"],
            )
            for r in rows
        }

    async def _tariff_index(
        self, conn: AsyncConnection[Any], ids: set[UUID]
    ) -> dict[UUID, tuple[TariffFacts, int]]:
        if not ids:
            return {}
        query = sql.SQL(
            "SELECT tariff_id, region, currency, version FROM {}.notification_tariff_index "
            "WHERE tariff_id = ANY(%s)"
        ).format(self.schema)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, (list(ids),))
            rows = await cur.fetchall()
        return {
            r["tariff_id"]: (
                TariffFacts(id=r["tariff_id"], region=r["region"], currency=r["currency"]),
                r["version"],
            )
            for r in rows
        }

    async def _save_index(
        self,
        conn: AsyncConnection[Any],
        alerts: dict[UUID, tuple[AlertFacts, int]],
        touched_alerts: set[UUID],
        tariffs: dict[UUID, tuple[TariffFacts, int]],
        touched_tariffs: set[UUID],
    ) -> None:
        if touched_alerts:
            async with conn.cursor() as cur:
                await cur.executemany(
                    sql.SQL(
                        "INSERT INTO {}.notification_alert_index (alert_id, alert_type, "
                        "severity, region, meter_id, message, version) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (alert_id) DO UPDATE "
                        "SET severity = excluded.severity, version = excluded.version "
                        "WHERE notification_alert_index.version < excluded.version"
                    ).format(self.schema),
                    [
                        (
                            a.id,
                            a.alert_type.value,
                            a.severity.value,
                            a.region,
                            a.meter,
                            a.message,
                            v,
                        )
                        for a, v in (alerts[i] for i in sorted(touched_alerts))
                    ],
                )
        if touched_tariffs:
            async with conn.cursor() as cur:
                await cur.executemany(
                    sql.SQL(
                        "INSERT INTO {}.notification_tariff_index (tariff_id, region, currency, "
                        "version) VALUES (%s, %s, %s, %s) ON CONFLICT (tariff_id) DO NOTHING"
                    ).format(self.schema),
                    [
                        (t.id, t.region, t.currency, v)
                        for t, v in (tariffs[i] for i in sorted(touched_tariffs))
                    ],
                )

    async def _subscriptions(
        self, conn: AsyncConnection[Any], kinds: Iterable[EventKind]
    ) -> list[Subscription]:
        query = sql.SQL(
            "SELECT id, owner, owner_roles, owner_customer, channel, target, kinds, regions, "
            "alert_types, min_severity, enabled, created_at, updated_at, version "
            "FROM {}.notification_subscriptions WHERE enabled AND kinds && %s ORDER BY id"
        ).format(self.schema)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, (sorted(k.value for k in kinds),))
            rows = await cur.fetchall()
        return [subscription_row(r).to_domain() for r in rows]

    async def _visibility(
        self, conn: AsyncConnection[Any], subscriptions: list[Subscription]
    ) -> dict[UUID, Visibility]:
        accounts = {
            s.owner.customer_account
            for s in subscriptions
            if not s.owner.is_staff and s.owner.customer_account is not None
        }
        meters: dict[str, list[tuple[UUID, str]]] = {}
        if accounts:
            query = sql.SQL(
                "SELECT id, region, customer_account FROM {}.meters "
                "WHERE customer_account = ANY(%s)"
            ).format(self.schema)
            cur = await conn.execute(query, (sorted(accounts),))
            for meter, region, account in await cur.fetchall():
                meters.setdefault(account, []).append((meter, region))
        return {
            s.id: Visibility.of(s.owner, meters.get(s.owner.customer_account or "", []))
            for s in subscriptions
        }

    async def _insert(
        self,
        conn: AsyncConnection[Any],
        pending: list[Pending],
        subscriptions: dict[UUID, Subscription],
    ) -> int:
        if not pending:
            return 0
        query = sql.SQL(
            "INSERT INTO {}.notification_deliveries (id, event_id, subscription_id, kind, "
            "event_type, event_time, body, status, next_attempt_at) "
            "SELECT d.*, 'PENDING', now() FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], "
            "%s::text[], %s::text[], %s::timestamptz[], %s::bytea[]) AS d "
            "ON CONFLICT (event_id, subscription_id) DO NOTHING RETURNING subscription_id"
        ).format(self.schema)
        cur = await conn.execute(
            query,
            (
                [p.id for p in pending],
                [p.event_id for p in pending],
                [p.subscription_id for p in pending],
                [p.kind.value for p in pending],
                [p.event_type for p in pending],
                [p.event_time for p in pending],
                [p.body for p in pending],
            ),
        )
        rows = await cur.fetchall()
        for (subscription_id,) in rows:
            QUEUED.labels(subscriptions[subscription_id].spec.channel.value).inc()
        return len(rows)


def _decode(payload: bytes) -> IncomingEvent | None:
    try:
        return _incoming.decode(payload)
    except msgspec.DecodeError as exc:
        log.error("notifier: skipping a message that is not a HES CloudEvent: %s", exc)
        return None


def _agg(event: IncomingEvent) -> str:
    parts = event.type.split(".")
    return parts[1] if len(parts) >= 4 else ""


def _name(event: IncomingEvent) -> str:
    parts = event.type.split(".")
    return parts[2] if len(parts) >= 4 else ""


def _index(
    event: IncomingEvent,
    alerts: dict[UUID, tuple[AlertFacts, int]],
    tariffs: dict[UUID, tuple[TariffFacts, int]],
    touched_alerts: set[UUID],
    touched_tariffs: set[UUID],
) -> tuple[Notable, AlertFacts | None, TariffFacts | None] | None:
    """Update the index from one event; the facts to notify, or None when nobody is told."""
    aggregate, name = _agg(event), _name(event)
    version = event.aggregateversion
    try:
        if aggregate == "alert":
            if name == "Raised":
                spec = _spec.decode(event.data["spec"])
                facts = AlertFacts(
                    id=event.subject,
                    alert_type=spec.alert_type,
                    severity=spec.severity,
                    region=spec.region,
                    meter=spec.meter,
                    message=spec.message,
                )
                if event.subject not in alerts:
                    alerts[event.subject] = (facts, version)
                    touched_alerts.add(event.subject)
            elif name == "Escalated" and event.subject in alerts:
                known, seen = alerts[event.subject]
                if version > seen:
                    severity = _severity.decode(event.data["severity"])
                    alerts[event.subject] = (
                        msgspec.structs.replace(known, severity=severity),
                        version,
                    )
                    touched_alerts.add(event.subject)
        elif aggregate == "tariff" and name == "Created" and event.subject not in tariffs:
            tariffs[event.subject] = (
                TariffFacts(
                    id=event.subject,
                    region=_text.decode(event.data["region"]),
                    currency=_text.decode(event.data["currency"]),
                ),
                version,
            )
            touched_tariffs.add(event.subject)
    except (KeyError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.error("notifier: cannot read %s %s: %s", event.type, event.id, exc)
        return None
    kind = kind_of(aggregate, name)
    if kind is None:
        return None
    if kind.is_alert:
        known_alert = alerts.get(event.subject)
        if known_alert is None:
            UNMATCHED.inc()
            log.warning("notifier: %s of unknown alert %s not notified", name, event.subject)
            return None
        alert = known_alert[0]
        if name == "Escalated":  # the severity this event set, even when redelivered late
            alert = msgspec.structs.replace(
                alert, severity=_severity.decode(event.data["severity"])
            )
        notable = Notable(
            kind=kind,
            time=event.time,
            region=alert.region,
            alert_type=alert.alert_type,
            severity=alert.severity,
            meter=alert.meter,
        )
        return notable, alert, None
    known_tariff = tariffs.get(event.subject)
    if known_tariff is None:
        UNMATCHED.inc()
        log.warning("notifier: %s of unknown tariff %s not notified", name, event.subject)
        return None
    price = event.data.get("price")
    tariff = msgspec.structs.replace(
        known_tariff[0], price=None if price is None else str(msgspec.json.decode(price))
    )
    return Notable(kind=kind, time=event.time, region=tariff.region), None, tariff


def customer_view(cloudevent: bytes) -> bytes:
    """A tariff CloudEvent as a customer may see it: no override reason or author, no actor."""
    envelope = _fields.decode(cloudevent)
    data = _fields.decode(envelope.get("data", msgspec.Raw(b"{}")))
    kept = {k: v for k, v in envelope.items() if k not in INTERNAL_ENVELOPE}
    kept["data"] = msgspec.Raw(
        _encoder.encode({k: v for k, v in data.items() if k not in INTERNAL_TARIFF_DATA})
    )
    return _encoder.encode(kept)


def _pending(
    event: IncomingEvent,
    original: bytes,
    notable: Notable,
    alert: AlertFacts | None,
    tariff: TariffFacts | None,
    subscription: Subscription,
) -> Pending:
    id_ = delivery_id(event.id, subscription.id)
    actor = None
    if "by" in event.data:
        actor = _by.decode(event.data["by"])
    if tariff is not None and not subscription.owner.is_staff:
        original = customer_view(original)
    body = NotificationBody(
        delivery_id=id_,
        subscription_id=subscription.id,
        event_id=event.id,
        kind=notable.kind,
        summary=summary(_name(event), alert, tariff, actor or event.actor),
        alert=alert,
        tariff=tariff,
        event=msgspec.Raw(original),
    )
    return Pending(
        id=id_,
        event_id=event.id,
        subscription_id=subscription.id,
        kind=notable.kind,
        event_type=event.type,
        event_time=event.time,
        body=_encoder.encode(body),
        channel=subscription.spec.channel.value,
    )
