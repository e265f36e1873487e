"""Notifications end to end: alert/tariff commands → relay → HES_EVENTS → notifier → receivers.

Everything is real: the AlertDesk/TariffBook/MeterRegistry applications on PostgreSQL, the
event relay to JetStream, the notifier's durable consumers, an HTTP receiver on a free port and
an in-process SMTP server (aiosmtpd). Subscriptions are made through GraphQL.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import nats
import psycopg
import pytest
from aiosmtpd.controller import Controller
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as NatsClient
from prometheus_client import REGISTRY
from psycopg import sql
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from adapters.nats.cloudevents import event_id
from adapters.nats.event_relay import EventRelay
from adapters.nats.streams import delete_streams
from adapters.nats.subjects import event_filter
from adapters.notify.secret_box import new_webhook_secret
from api.app import create_app
from api.auth import TokenService
from bootstrap.connections import notifier_pool
from bootstrap.container import Container
from bootstrap.migrate import migrate
from bootstrap.workers import SupervisedProjection
from commands.alerts import AlertDesk
from commands.context import SYSTEM, Actor, CommandContext, Role
from commands.meters import MeterRegistry
from commands.tariffs import TariffBook
from config.settings import Settings
from domain.alert import AlertType, Severity
from domain.detection import AlertDecision, Verdict
from domain.notifications import verify_signature
from domain.pricing import TariffSpec
from domain.values import ConnectionProfile, Location, MeterSpec
from processes.notifier import Notifier, secret_box
from tests.conftest import JWT_SECRET, LOOPBACK_WEBHOOKS, RUN_ID, new_serial
from tests.integration.gql import gql
from tests.integration.notify_helpers import MailHandler, WebhookReceiver, eventually, smtp_server
from tests.services import Services

pytestmark = pytest.mark.integration

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Any]
BACKOFF = 0.3
FACTOR = 2.0
TIMEOUT = 1.0

SAVED = """
  __typename
  ... on NotificationSubscriptionSaved {
    webhookSecret replayed
    subscription { id owner channel url email kinds regions alertTypes minSeverity enabled
                   version }
  }
  ... on ValidationError { code message fields { field rule message } }
  ... on NotFoundError { code message }
  ... on ConflictError { code message }
  ... on ForbiddenError { code message }
"""
CREATE = (
    "mutation($input: NotificationSubscriptionInput!, $key: String) {"
    " createNotificationSubscription(input: $input, idempotencyKey: $key) {" + SAVED + "} }"
)
UPDATE = (
    "mutation($id: ID!, $changes: NotificationSubscriptionChanges!, $v: Int) {"
    " updateNotificationSubscription(id: $id, changes: $changes, expectedVersion: $v) {"
    + SAVED
    + "} }"
)
DELETE = (
    "mutation($id: ID!) { deleteNotificationSubscription(id: $id) { __typename"
    " ... on NotificationSubscriptionDeleted { id } ... on NotFoundError { code message } } }"
)
LIST = (
    "query($all: Boolean!) { notificationSubscriptions(allOwners: $all)"
    " { id owner channel url regions } }"
)
DELIVERIES = """
query($sub: ID, $status: NotificationDeliveryStatus, $first: Int!, $after: String) {
  notificationDeliveries(subscriptionId: $sub, status: $status, first: $first, after: $after) {
    edges { cursor node { id subscriptionId eventId eventType kind status attempts lastError
      attemptLog { attempt verdict statusCode detail durationMs } } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mail() -> Iterator[tuple[Controller, MailHandler]]:
    """An SMTP server for this module."""
    controller, handler = smtp_server()
    yield controller, handler
    controller.stop()


@pytest.fixture(scope="module")
def nsettings(
    services: Services,
    mail: tuple[Controller, MailHandler],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Settings]:
    """A schema and stream prefix of this module's own, with fast retries and SMTP."""
    controller, _ = mail
    settings = Settings.of(
        database_url=services.database_url,
        nats_url=services.nats_url,
        db_schema=f"nt_{RUN_ID}",
        nats_prefix=f"NT{RUN_ID}_",
        data_dir=Path(tmp_path_factory.mktemp("notify")),
        jwt_secret=JWT_SECRET,
        notification_backoff_seconds=BACKOFF,
        notification_backoff_factor=FACTOR,
        notification_timeout_seconds=TIMEOUT,
        smtp_host="127.0.0.1",
        smtp_port=int(controller.port),
        smtp_from="hes@grid.example",
        **LOOPBACK_WEBHOOKS,
    )
    asyncio.run(migrate(settings))
    yield settings
    assert settings.database.url
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(settings.database.schema))
        )

    async def drop_streams() -> None:
        nc = await nats.connect(settings.nats.url or "")
        await delete_streams(nc.jetstream(), settings.nats.prefix)
        await nc.close()

    asyncio.run(drop_streams())


class Apps(msgspec.Struct):
    """The write side of this module's schema."""

    alerts: AlertDesk
    tariffs: TariffBook
    meters: MeterRegistry


@pytest.fixture(scope="module")
def apps(nsettings: Settings) -> Iterator[Apps]:
    """AlertDesk, TariffBook and MeterRegistry on the module's schema."""
    env = nsettings.database.eventsourcing_env()
    made = Apps(
        alerts=AlertDesk(env=env), tariffs=TariffBook(env=env), meters=MeterRegistry(env=env)
    )
    yield made
    made.alerts.close()
    made.tariffs.close()
    made.meters.close()


@pytest.fixture(scope="module")
def meters_view(nsettings: Settings) -> Iterator[None]:
    """The meters projection (customers' meters and regions come from it)."""
    worker = SupervisedProjection(nsettings)
    worker.start()
    yield
    worker.stop()


@pytest.fixture(scope="module")
async def nc(nsettings: Settings) -> AsyncIterator[NatsClient]:
    """A NATS connection for the module."""
    client = await nats.connect(nsettings.nats.url or "")
    yield client
    await client.drain()


@pytest.fixture(scope="module")
async def relays(nsettings: Settings, nc: NatsClient) -> AsyncIterator[list[EventRelay]]:
    """Event relays of the alerts and tariffs applications to this module's HES_EVENTS."""
    made = [
        EventRelay(
            nc,
            nsettings.database.eventsourcing_env(),
            application_name=name,
            source=nsettings.events_source,
            prefix=nsettings.nats.prefix,
        )
        for name in ("alerts", "tariffs")
    ]
    yield made
    for relay in made:
        relay.close()


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """The HTTP receiver for this module."""
    server = WebhookReceiver(slow_seconds=TIMEOUT * 3)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def notifier(nsettings: Settings, nc: NatsClient) -> AsyncIterator[Notifier]:
    """The notifier, running in the test loop for the whole module."""
    worker = Notifier(
        nsettings.database,
        nsettings.nats,
        nsettings.notifications,
        nc,
        notifier_pool(nsettings.database),
        box=secret_box(nsettings.notifications, nsettings.runtime.data_dir),
        poll_interval=0.2,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    yield worker
    stop.set()
    await asyncio.wait_for(task, 30)


@pytest.fixture(scope="module")
async def api(nsettings: Settings, tokens: TokenService) -> AsyncIterator[Client]:
    """The real app on the module's schema."""
    app = create_app(Container(nsettings), tokens)
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


# -- helpers -------------------------------------------------------------------------------


def new_region() -> str:
    """A region name no other test uses."""
    return f"NR-{uuid.uuid4().hex[:8]}"


async def publish(relays: list[EventRelay]) -> None:
    """Relay everything the applications recorded so far."""
    for relay in relays:
        await relay.relay_available()


async def subscribe(api: Client, headers: dict[str, str], **input: Any) -> tuple[str, str | None]:
    """Create a subscription through GraphQL; its id and (webhooks) secret."""
    body = await gql(api, CREATE, {"input": input}, headers)
    result = body["data"]["createNotificationSubscription"]
    assert result["__typename"] == "NotificationSubscriptionSaved", result
    return result["subscription"]["id"], result["webhookSecret"]


def raise_alert(
    desk: AlertDesk,
    region: str,
    alert_type: AlertType = AlertType.OVERLOAD,
    severity: Severity = Severity.HIGH,
    meter: UUID | None = None,
) -> UUID:
    """Raise (or recur) an alert as a detector would; its id."""
    decision = AlertDecision(
        verdict=Verdict.RAISE,
        alert_type=alert_type,
        severity=severity,
        region=region,
        dedup_key=f"{alert_type}:{region}:{meter}",
        message=f"{alert_type} in {region}",
        observed_at=datetime.now(UTC),
        meter=meter,
    )
    return desk.raise_or_recur(decision, CommandContext(actor=SYSTEM)).alert.id


def create_tariff(book: TariffBook, region: str) -> UUID:
    """Create a region's tariff; its id."""
    spec = TariffSpec(
        region=region, currency="EUR", base_price=Decimal("0.2500"), timezone="Europe/Dublin"
    )
    return book.create_tariff(spec, CommandContext(actor=SYSTEM)).tariff.id


async def deliveries_of(settings: Settings, subscription: str) -> list[dict[str, Any]]:
    """Delivery rows of a subscription with their attempts, oldest first."""
    assert settings.database.url
    async with await psycopg.AsyncConnection.connect(settings.database.url) as conn:
        cur = await conn.execute(
            sql.SQL(
                "SELECT d.id, d.event_id, d.kind, d.status, d.attempts, "
                "coalesce(array_agg(a.status_code ORDER BY a.attempt) "
                "FILTER (WHERE a.attempt IS NOT NULL), '{{}}') AS codes, "
                "coalesce(array_agg(a.verdict ORDER BY a.attempt) "
                "FILTER (WHERE a.attempt IS NOT NULL), '{{}}') AS verdicts, "
                "coalesce(array_agg(a.detail ORDER BY a.attempt) "
                "FILTER (WHERE a.attempt IS NOT NULL), '{{}}') AS details "
                "FROM {s}.notification_deliveries d "
                "LEFT JOIN {s}.notification_attempts a ON a.delivery_id = d.id "
                "WHERE d.subscription_id = %s GROUP BY d.id ORDER BY min(d.seq)"
            ).format(s=sql.Identifier(settings.database.schema)),
            (UUID(subscription),),
        )
        names = [c.name for c in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


async def status_of(settings: Settings, subscription: str) -> list[str]:
    """Statuses of a subscription's deliveries."""
    return [d["status"] for d in await deliveries_of(settings, subscription)]


def metric(outcome: str, channel: str = "WEBHOOK") -> float:
    """Current value of the deliveries counter."""
    value = REGISTRY.get_sample_value(
        "hes_notification_deliveries_total", {"channel": channel, "outcome": outcome}
    )
    return value or 0.0


# -- webhooks --------------------------------------------------------------------------------


async def test_webhook_retried_with_backoff_until_it_succeeds(
    api: Client,
    auth: Auth,
    apps: Apps,
    relays: list[EventRelay],
    receiver: WebhookReceiver,
    notifier: Notifier,
    nsettings: Settings,
) -> None:
    region = new_region()
    path = f"/flaky/2/{region}"
    headers = auth(Role.OPERATOR, subject=f"op-{region}")
    delivered_before = metric("delivered")
    sub, secret = await subscribe(
        api,
        headers,
        channel="WEBHOOK",
        url=receiver.base + path,
        kinds=["ALERT_RAISED"],
        regions=[region],
    )
    assert secret is not None and secret.startswith("whsec_")

    alert = await asyncio.to_thread(raise_alert, apps.alerts, region)
    await publish(relays)

    async def delivered() -> bool:
        return await status_of(nsettings, sub) == ["DELIVERED"]

    await eventually(delivered, what="delivery on the third attempt")
    [row] = await deliveries_of(nsettings, sub)
    assert row["attempts"] == 3
    assert row["codes"] == [500, 500, 200]
    assert row["verdicts"] == ["RETRY", "RETRY", "SUCCESS"]

    requests = receiver.to(path)
    assert len(requests) == 3
    cloud_id = str(event_id(alert, 1))
    for request in requests:
        assert request.headers["x-hes-event-id"] == cloud_id
        assert request.headers["x-hes-delivery-id"] == str(row["id"])
        assert verify_signature(
            secret, request.headers["x-hes-signature"], request.body, now=int(time.time())
        )
        assert not verify_signature(
            "whsec_wrong", request.headers["x-hes-signature"], request.body, now=int(time.time())
        )
        # Standard Webhooks, checked by that spec's own library (what receivers use).
        assert request.headers["webhook-id"] == str(row["id"])
        assert Webhook(secret).verify(request.body, dict(request.headers)) == json.loads(
            request.body
        )
        with pytest.raises(WebhookVerificationError):
            Webhook(new_webhook_secret()).verify(request.body, dict(request.headers))
    assert requests[0].body == requests[2].body  # a retry re-sends the same notification
    body = json.loads(requests[0].body)
    assert body["kind"] == "ALERT_RAISED"
    assert body["eventId"] == cloud_id and body["event"]["id"] == cloud_id
    assert body["event"]["type"] == "hes.alert.Raised.v1"
    assert body["alert"]["region"] == region and body["alert"]["severity"] == "high"
    assert body["summary"].startswith(f"OVERLOAD alert in {region} raised (high)")
    # Exponential backoff: ~0.3 s, then ~0.6 s (jitter adds at most 10 %).
    first_wait = requests[1].at - requests[0].at
    second_wait = requests[2].at - requests[1].at
    assert BACKOFF * 0.9 <= first_wait <= BACKOFF * 1.1 + 0.5
    assert BACKOFF * FACTOR * 0.9 <= second_wait <= BACKOFF * FACTOR * 1.1 + 0.5
    assert metric("delivered") == delivered_before + 1

    page = await gql(api, DELIVERIES, {"sub": sub, "first": 10}, headers)
    [edge] = page["data"]["notificationDeliveries"]["edges"]
    node = edge["node"]
    assert node["status"] == "DELIVERED" and node["eventId"] == cloud_id
    assert [a["statusCode"] for a in node["attemptLog"]] == [500, 500, 200]
    assert [a["verdict"] for a in node["attemptLog"]] == ["RETRY", "RETRY", "SUCCESS"]
    assert all(a["durationMs"] >= 0 for a in node["attemptLog"])


async def test_a_failing_or_slow_endpoint_never_holds_up_the_others(
    api: Client,
    auth: Auth,
    apps: Apps,
    relays: list[EventRelay],
    receiver: WebhookReceiver,
    notifier: Notifier,
    nsettings: Settings,
) -> None:
    region = new_region()
    headers = auth(Role.OPERATOR, subject=f"op-{region}")
    paths = {name: f"/{name}/{region}" for name in ("down", "slow", "ok")}
    subs = {}
    for name, path in paths.items():
        subs[name], _ = await subscribe(
            api,
            headers,
            channel="WEBHOOK",
            url=receiver.base + path,
            kinds=["ALERT_RAISED"],
            regions=[region],
        )
    failed_before = metric("failed")

    await asyncio.to_thread(raise_alert, apps.alerts, region)
    published = time.monotonic()
    await publish(relays)

    async def ok_received() -> bool:
        return bool(receiver.to(paths["ok"]))

    await eventually(ok_received, within=5, what="the healthy endpoint's delivery")
    assert receiver.to(paths["ok"])[0].at - published < TIMEOUT  # not after a slow call

    async def both_failed() -> bool:
        return [await status_of(nsettings, subs[n]) for n in ("down", "slow")] == [
            ["FAILED"],
            ["FAILED"],
        ]

    await eventually(both_failed, within=20, what="failing endpoints marked failed")
    [down] = await deliveries_of(nsettings, subs["down"])
    [slow] = await deliveries_of(nsettings, subs["slow"])
    assert down["attempts"] == 3 and down["codes"] == [503, 503, 503]
    assert down["verdicts"] == ["RETRY", "RETRY", "RETRY"]
    assert slow["attempts"] == 3 and slow["codes"] == [None, None, None]
    assert all("timed out" in d for d in slow["details"])
    assert await status_of(nsettings, subs["ok"]) == ["DELIVERED"]
    assert len(receiver.to(paths["ok"])) == 1
    assert len(receiver.to(paths["down"])) == 3
    assert metric("failed") == failed_before + 2


# -- e-mail --------------------------------------------------------------------------------


async def test_tariff_changes_by_email_and_a_refused_mailbox_fails_at_once(
    api: Client,
    auth: Auth,
    apps: Apps,
    relays: list[EventRelay],
    mail: tuple[Controller, MailHandler],
    notifier: Notifier,
    nsettings: Settings,
) -> None:
    _, handler = mail
    region = new_region()
    headers = auth(Role.ADMIN, subject=f"admin-{region}")
    address = f"ops-{region.lower()}@grid.example"
    good, secret = await subscribe(
        api,
        headers,
        channel="EMAIL",
        email=address,
        kinds=["TARIFF_PRICE_CHANGED"],
        regions=[region],
    )
    assert secret is None  # e-mail subscriptions have no secret
    refused, _ = await subscribe(
        api,
        headers,
        channel="EMAIL",
        email="nobody@grid.example",
        kinds=["TARIFF_PRICE_CHANGED"],
        regions=[region],
    )

    tariff = await asyncio.to_thread(create_tariff, apps.tariffs, region)
    await asyncio.to_thread(
        apps.tariffs.apply_override,
        region,
        Decimal("0.4100"),
        "storm",
        datetime.now(UTC) + timedelta(hours=1),
        CommandContext(actor=Actor(subject="ada", roles=frozenset({Role.ADMIN}))),
    )
    await publish(relays)

    async def sent() -> bool:
        return await status_of(nsettings, good) == ["DELIVERED", "DELIVERED"] and (
            await status_of(nsettings, refused) == ["FAILED", "FAILED"]
        )

    await eventually(sent, what="two e-mails delivered, two refused")
    mine = [m for m in handler.messages if address in m.rcpt_tos]
    assert len(mine) == 2
    parsed = [message_from_bytes(m.original_content or b"", policy=default) for m in mine]
    subjects = sorted(str(p["Subject"]).strip() for p in parsed)  # folding may lead a space
    assert subjects == [
        f"[HES] Tariff {region}: price now 0.4100 EUR/kWh (administrator override)",
        f"[HES] Tariff {region}: tariff created",
    ]
    assert {p["X-HES-Event-Id"] for p in parsed} == {
        str(event_id(tariff, 1)),
        str(event_id(tariff, 2)),
    }
    assert all(p["From"] == "hes@grid.example" for p in parsed)
    rows = await deliveries_of(nsettings, good)
    assert [r["codes"] for r in rows] == [[250], [250]]
    for row in await deliveries_of(nsettings, refused):
        assert row["attempts"] == 1  # 550: retrying cannot help
        assert row["codes"] == [550] and row["verdicts"] == ["PERMANENT"]


# -- preferences and visibility ------------------------------------------------------------


async def test_preferences_and_role_visibility_decide_who_is_told(
    api: Client,
    auth: Auth,
    apps: Apps,
    relays: list[EventRelay],
    receiver: WebhookReceiver,
    notifier: Notifier,
    meters_view: None,
    nsettings: Settings,
) -> None:
    region, other_region = new_region(), new_region()
    account = f"ACC-{uuid.uuid4().hex[:8]}"
    registrar = CommandContext(actor=Actor(subject="reg", roles=frozenset({Role.OPERATOR})))
    spec = MeterSpec(
        serial=new_serial("NT"),
        manufacturer="Acme",
        model="AM550",
        firmware="1.0",
        phases=1,
        region=region,
        area="A1",
        connection=ConnectionProfile(host="127.0.0.1"),
    )
    meter = (await asyncio.to_thread(apps.meters.register_meter, spec, registrar)).meter.id
    await asyncio.to_thread(
        apps.meters.commission_meter, meter, Location(address="1 Main St"), account, registrar
    )
    stranger_meter = uuid.uuid4()
    assert nsettings.database.url

    async def meter_projected() -> bool:
        async with await psycopg.AsyncConnection.connect(nsettings.database.url or "") as conn:
            cur = await conn.execute(
                sql.SQL("SELECT customer_account FROM {}.meters WHERE id = %s").format(
                    sql.Identifier(nsettings.database.schema)
                ),
                (meter,),
            )
            row = await cur.fetchone()
        return row is not None and row[0] == account

    await eventually(meter_projected, what="the customer's meter in the read model")

    url = receiver.base + f"/ok/{region}"
    operator = auth(Role.OPERATOR, subject=f"op-{region}")
    strict, _ = await subscribe(
        api,
        operator,
        channel="WEBHOOK",
        url=url,
        kinds=["ALERT_RAISED"],
        regions=[region],
        alertTypes=["OVERLOAD"],
        minSeverity="HIGH",
    )
    everything, _ = await subscribe(
        api,
        operator,
        channel="WEBHOOK",
        url=url,
        regions=[region, other_region],
        kinds=[
            "ALERT_RAISED",
            "ALERT_ESCALATED",
            "ALERT_ACKNOWLEDGED",
            "ALERT_RESOLVED",
            "TARIFF_PRICE_CHANGED",
        ],
    )
    customer, _ = await subscribe(
        api,
        auth(Role.CUSTOMER, subject=f"cust-{region}", customer=account),
        channel="WEBHOOK",
        url=url,
        kinds=["ALERT_RAISED", "ALERT_ACKNOWLEDGED", "TARIFF_PRICE_CHANGED"],
    )

    desk = apps.alerts
    overload = await asyncio.to_thread(raise_alert, desk, region)  # regional, high
    anomaly = await asyncio.to_thread(
        raise_alert, desk, region, AlertType.ANOMALY, Severity.MEDIUM, meter
    )
    threshold = await asyncio.to_thread(
        raise_alert, desk, region, AlertType.THRESHOLD, Severity.LOW, stranger_meter
    )
    operator_ctx = CommandContext(actor=Actor(subject="olga", roles=frozenset({Role.OPERATOR})))
    await asyncio.to_thread(desk.acknowledge, anomaly, operator_ctx)
    await asyncio.to_thread(  # recurs critical: Recurred (not notified) + Escalated
        raise_alert, desk, region, AlertType.OVERLOAD, Severity.CRITICAL
    )
    tariff = await asyncio.to_thread(create_tariff, apps.tariffs, region)
    far_tariff = await asyncio.to_thread(create_tariff, apps.tariffs, other_region)
    await publish(relays)

    raised = {a: str(event_id(a, 1)) for a in (overload, anomaly, threshold)}
    expected = {
        strict: {(raised[overload], "ALERT_RAISED")},
        everything: {
            (raised[overload], "ALERT_RAISED"),
            (raised[anomaly], "ALERT_RAISED"),
            (raised[threshold], "ALERT_RAISED"),
            (str(event_id(anomaly, 2)), "ALERT_ACKNOWLEDGED"),
            (str(event_id(overload, 3)), "ALERT_ESCALATED"),
            (str(event_id(tariff, 1)), "TARIFF_PRICE_CHANGED"),
            (str(event_id(far_tariff, 1)), "TARIFF_PRICE_CHANGED"),
        },
        customer: {
            (raised[anomaly], "ALERT_RAISED"),
            (str(event_id(anomaly, 2)), "ALERT_ACKNOWLEDGED"),
            (str(event_id(tariff, 1)), "TARIFF_PRICE_CHANGED"),
        },
    }

    async def got() -> dict[str, set[tuple[str, str]]]:
        return {
            sub: {(str(d["event_id"]), d["kind"]) for d in await deliveries_of(nsettings, sub)}
            for sub in expected
        }

    async def complete() -> bool:
        return all(len(v) >= len(expected[k]) for k, v in (await got()).items())

    await eventually(complete, what="every expected delivery queued")
    await asyncio.sleep(0.5)  # anything extra would have been queued with the rest
    assert await got() == expected
    await _wait_for_ack(receiver, region, customer)
    ack = next(
        body
        for body in (json.loads(r.body) for r in receiver.to(f"/ok/{region}"))
        if body["kind"] == "ALERT_ACKNOWLEDGED" and body["subscriptionId"] == customer
    )
    # Acknowledged carries no region or meter: the notifier's index supplied them.
    assert ack["alert"]["meter"] == str(meter) and ack["alert"]["region"] == region
    assert ack["summary"] == f"ANOMALY alert in {region} acknowledged by olga"


async def _wait_for_ack(receiver: WebhookReceiver, region: str, subscription: str) -> None:
    async def arrived() -> bool:
        return any(
            json.loads(r.body)["kind"] == "ALERT_ACKNOWLEDGED"
            and json.loads(r.body)["subscriptionId"] == subscription
            for r in receiver.to(f"/ok/{region}")
        )

    await eventually(arrived, what="the customer's acknowledgement webhook")


async def test_a_redelivered_batch_adds_no_delivery(
    api: Client,
    auth: Auth,
    apps: Apps,
    relays: list[EventRelay],
    receiver: WebhookReceiver,
    notifier: Notifier,
    nc: NatsClient,
    nsettings: Settings,
) -> None:
    region = new_region()
    sub, _ = await subscribe(
        api,
        auth(Role.VIEWER, subject=f"v-{region}"),
        channel="WEBHOOK",
        url=receiver.base + f"/ok/{region}",
        kinds=["ALERT_RAISED", "ALERT_RESOLVED"],
        regions=[region],
    )
    alert = await asyncio.to_thread(raise_alert, apps.alerts, region)
    operator_ctx = CommandContext(actor=Actor(subject="olga", roles=frozenset({Role.OPERATOR})))
    await asyncio.to_thread(apps.alerts.resolve, alert, "fixed", operator_ctx)
    await publish(relays)

    async def two() -> bool:
        return await status_of(nsettings, sub) == ["DELIVERED", "DELIVERED"]

    await eventually(two, what="raised and resolved delivered")
    # Read this alert's two messages back from the stream and feed them in again.
    js = nc.jetstream()
    ordered = await js.subscribe(
        event_filter(nsettings.nats.prefix, "alert.>"),
        stream=nsettings.nats.stream("HES_EVENTS"),
        ordered_consumer=True,
    )
    payloads: list[bytes] = []
    wanted = {str(event_id(alert, 1)), str(event_id(alert, 2))}
    try:
        while len(payloads) < 2:
            msg = await ordered.next_msg(timeout=5)
            if json.loads(msg.data)["id"] in wanted:
                payloads.append(msg.data)
    finally:
        await ordered.unsubscribe()
    assert await notifier.intake.take(payloads) == 0
    assert await notifier.intake.take(list(reversed(payloads))) == 0
    rows = await deliveries_of(nsettings, sub)
    assert len(rows) == 2 and {str(r["event_id"]) for r in rows} == wanted
    assert len(receiver.to(f"/ok/{region}")) == 2


# -- the API -------------------------------------------------------------------------------


async def test_subscriptions_belong_to_their_owner_and_the_secret_is_shown_once(
    api: Client, auth: Auth, nsettings: Settings, receiver: WebhookReceiver
) -> None:
    region = new_region()
    anna = auth(Role.OPERATOR, subject=f"anna-{region}")
    bob = auth(Role.VIEWER, subject=f"bob-{region}")
    admin = auth(Role.ADMIN, subject=f"root-{region}")
    input = {
        "channel": "WEBHOOK",
        "url": receiver.base + "/ok/api",
        "kinds": ["ALERT_RAISED"],
        "regions": [region],
    }
    first = await gql(api, CREATE, {"input": input, "key": "k-1"}, anna)
    saved = first["data"]["createNotificationSubscription"]
    sub_id, secret = saved["subscription"]["id"], saved["webhookSecret"]
    assert secret and saved["subscription"]["owner"] == f"anna-{region}"
    assert saved["subscription"]["version"] == 1 and not saved["replayed"]

    again = (await gql(api, CREATE, {"input": input, "key": "k-1"}, anna))["data"][
        "createNotificationSubscription"
    ]
    assert again["replayed"] and again["webhookSecret"] is None  # never shown twice
    assert again["subscription"]["id"] == sub_id

    assert nsettings.database.url
    async with await psycopg.AsyncConnection.connect(nsettings.database.url) as conn:
        cur = await conn.execute(
            sql.SQL("SELECT secret_sealed FROM {}.notification_subscriptions WHERE id = %s").format(
                sql.Identifier(nsettings.database.schema)
            ),
            (UUID(sub_id),),
        )
        row = await cur.fetchone()
    assert row is not None and secret.encode() not in bytes(row[0])

    mine = (await gql(api, LIST, {"all": False}, anna))["data"]["notificationSubscriptions"]
    assert [s["id"] for s in mine] == [sub_id]
    assert (await gql(api, LIST, {"all": False}, bob))["data"]["notificationSubscriptions"] == []
    refused = await gql(api, LIST, {"all": True}, bob)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    every = (await gql(api, LIST, {"all": True}, admin))["data"]["notificationSubscriptions"]
    assert sub_id in {s["id"] for s in every}

    # Another user can neither change, delete nor read the log of anna's subscription.
    theirs = await gql(api, UPDATE, {"id": sub_id, "changes": {"enabled": False}}, bob)
    assert theirs["data"]["updateNotificationSubscription"]["__typename"] == "NotFoundError"
    gone = await gql(api, DELETE, {"id": sub_id}, bob)
    assert gone["data"]["deleteNotificationSubscription"]["__typename"] == "NotFoundError"
    log = await gql(api, DELIVERIES, {"sub": sub_id, "first": 5}, bob)
    assert log["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    operator_view = await gql(
        api, DELIVERIES, {"sub": sub_id, "first": 5}, auth(Role.OPERATOR, subject="ops-2")
    )
    assert operator_view["data"]["notificationDeliveries"]["edges"] == []

    changed = await gql(
        api,
        UPDATE,
        {"id": sub_id, "v": 1, "changes": {"regions": [region, "Extra"], "rotateSecret": True}},
        anna,
    )
    result = changed["data"]["updateNotificationSubscription"]
    assert result["__typename"] == "NotificationSubscriptionSaved"
    assert result["subscription"]["version"] == 2
    assert sorted(result["subscription"]["regions"]) == sorted([region, "Extra"])
    assert result["webhookSecret"] and result["webhookSecret"] != secret
    stale = await gql(api, UPDATE, {"id": sub_id, "v": 1, "changes": {"enabled": False}}, anna)
    assert stale["data"]["updateNotificationSubscription"]["__typename"] == "ConflictError"

    deleted = await gql(api, DELETE, {"id": sub_id}, anna)
    assert deleted["data"]["deleteNotificationSubscription"] == {
        "__typename": "NotificationSubscriptionDeleted",
        "id": sub_id,
    }
    assert (await gql(api, LIST, {"all": False}, anna))["data"]["notificationSubscriptions"] == []


async def test_bad_subscriptions_are_refused_naming_field_and_rule(
    api: Client, auth: Auth, receiver: WebhookReceiver
) -> None:
    headers = auth(Role.CUSTOMER, subject="cust-bad", customer="ACC-BAD")
    cases = [
        (
            {"channel": "WEBHOOK", "url": "http://hooks.example.com/x", "kinds": ["ALERT_RAISED"]},
            ("url", "https"),
        ),
        (
            {
                "channel": "WEBHOOK",
                "url": "https://u:p@hooks.example.com/",
                "kinds": ["ALERT_RAISED"],
            },
            ("url", "credentials"),
        ),
        ({"channel": "WEBHOOK", "kinds": ["ALERT_RAISED"]}, ("url", "required")),
        (
            {"channel": "EMAIL", "email": "not-an-address", "kinds": ["ALERT_RAISED"]},
            ("email", "format"),
        ),
        (
            {"channel": "WEBHOOK", "url": receiver.base + "/ok/x", "kinds": []},
            ("kinds", "required"),
        ),
        (
            {
                "channel": "WEBHOOK",
                "url": receiver.base + "/ok/x",
                "kinds": ["ALERT_RAISED"],
                "regions": [" "],
            },
            ("regions[0]", "length"),
        ),
    ]
    for input, (field, rule) in cases:
        body = await gql(api, CREATE, {"input": input}, headers)
        result = body["data"]["createNotificationSubscription"]
        assert result["__typename"] == "ValidationError", (input, result)
        assert (field, rule) in {(f["field"], f["rule"]) for f in result["fields"]}, result
    audrey = auth(Role.AUDITOR, subject="audrey-notify")
    auditor = await gql(
        api,
        CREATE,
        {
            "input": {
                "channel": "WEBHOOK",
                "url": receiver.base + "/ok/x",
                "kinds": ["ALERT_RAISED"],
            }
        },
        audrey,
    )  # the auditor changes nothing, not even subscriptions
    assert auditor["data"]["createNotificationSubscription"]["__typename"] == "ForbiddenError"
    listed = await gql(api, LIST, {"all": False}, audrey)
    assert listed["data"]["notificationSubscriptions"] == []
    unknown = await gql(
        api, CREATE, {"input": {"channel": "FAX", "kinds": ["ALERT_RAISED"]}}, headers
    )
    assert "errors" in unknown  # GraphQL's own enum check
    anonymous = await gql(api, LIST, {"all": False}, {})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize("role", [Role.VIEWER, Role.CUSTOMER, Role.OPERATOR])
async def test_webhooks_into_the_network_are_refused(
    client: Client, auth: Auth, role: Role
) -> None:
    """Cloud metadata and private addresses, even over https, even with the test allow-list."""
    headers = auth(role, subject=f"ssrf-{role.value}", customer="ACC-SSRF")
    for url, kind in (
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://10.0.0.1/hook", "private"),
    ):
        body = await gql(
            client,
            CREATE,
            {"input": {"channel": "WEBHOOK", "url": url, "kinds": ["ALERT_RAISED"]}},
            headers,
        )
        result = body["data"]["createNotificationSubscription"]
        assert result["__typename"] == "ValidationError", result
        [field] = [f for f in result["fields"] if f["rule"] == "destination"]
        assert field["field"] == "url" and kind in field["message"], result
    listed = await gql(client, LIST, {"all": False}, headers)
    assert listed["data"]["notificationSubscriptions"] == []


async def test_email_is_refused_where_smtp_is_not_configured(client: Client, auth: Auth) -> None:
    body = await gql(
        client,
        CREATE,
        {"input": {"channel": "EMAIL", "email": "ops@grid.example", "kinds": ["ALERT_RAISED"]}},
        auth(Role.OPERATOR, subject="op-nosmtp"),
    )
    result = body["data"]["createNotificationSubscription"]
    assert result["__typename"] == "ValidationError"
    assert [(f["field"], f["rule"]) for f in result["fields"]] == [("email", "smtp")]
