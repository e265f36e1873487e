"""`hes notifications run` killed (SIGKILL) mid-way and restarted: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import nats
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from adapters.nats.cloudevents import event_id
from adapters.nats.event_relay import EventRelay
from adapters.nats.streams import delete_streams
from bootstrap.embedded import spawn_child
from bootstrap.migrate import migrate
from commands.context import SYSTEM, Actor, CommandContext, Role
from commands.notification_subscriptions import NotificationSubscriptions
from commands.tariffs import TariffBook
from config.settings import Settings
from domain.notifications import SubscriptionDraft
from domain.pricing import TariffSpec
from processes.notifier import secret_box
from tests.conftest import LOOPBACK_WEBHOOKS, RUN_ID
from tests.integration.notify_helpers import WebhookReceiver, eventually
from tests.services import Services

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REGION = "Restartshire"
FIRST_BATCH = 30
SECOND_BATCH = 10


@pytest.fixture(scope="module")
def rsettings(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A schema and stream prefix of this module's own."""
    settings = Settings.of(
        database_url=services.database_url,
        nats_url=services.nats_url,
        db_schema=f"nk_{RUN_ID}",
        nats_prefix=f"NK{RUN_ID}_",
        data_dir=Path(tmp_path_factory.mktemp("restart")),
        notification_timeout_seconds=1.0,
        notification_backoff_seconds=0.2,
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


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """The HTTP receiver of this test."""
    server = WebhookReceiver()
    await server.start()
    yield server
    await server.stop()


def start_notifier(settings: Settings) -> subprocess.Popen[bytes]:
    """``hes notifications run`` as a child process with the test's settings."""
    env = {
        **os.environ,
        "HES_DATABASE_URL": settings.database.url or "",
        "HES_NATS_URL": settings.nats.url or "",
        "HES_DB_SCHEMA": settings.database.schema,
        "HES_NATS_PREFIX": settings.nats.prefix,
        "HES_DATA_DIR": str(settings.runtime.data_dir),
        "HES_NOTIFICATION_TIMEOUT_SECONDS": "1",
        "HES_NOTIFICATION_BACKOFF_SECONDS": "0.2",
        "HES_WEBHOOK_HTTP_HOSTS": LOOPBACK_WEBHOOKS["webhook_http_hosts"],
        "HES_WEBHOOK_ALLOWED_NETWORKS": LOOPBACK_WEBHOOKS["webhook_allowed_networks"],
    }
    log = (settings.runtime.data_dir / "notifier.log").open("ab")
    return spawn_child(
        [sys.executable, "-m", "hes.cli", "notifications", "run"],
        death_signal=signal.SIGTERM,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


def overrides(book: TariffBook, count: int, start: int) -> list[UUID]:
    """Apply ``count`` price overrides to the region; the CloudEvents ids of their events."""
    admin = CommandContext(actor=Actor(subject="ada", roles=frozenset({Role.ADMIN})))
    ids = []
    for i in range(start, start + count):
        outcome = book.apply_override(
            REGION,
            Decimal("0.3000") + Decimal(i) / 10000,
            f"step {i}",
            datetime.now(UTC) + timedelta(hours=1),
            admin,
        )
        ids.append(event_id(outcome.tariff.id, outcome.tariff.version))
    return ids


async def test_a_killed_notifier_loses_and_doubles_no_delivery(
    rsettings: Settings, receiver: WebhookReceiver
) -> None:
    assert rsettings.database.url
    book = TariffBook(env=rsettings.database.eventsourcing_env())
    nc = await nats.connect(rsettings.nats.url or "")
    relay = EventRelay(
        nc,
        rsettings.database.eventsourcing_env(),
        application_name="tariffs",
        source=rsettings.events_source,
        prefix=rsettings.nats.prefix,
    )
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        rsettings.database.url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    )
    await pool.open()
    store = NotificationSubscriptions(
        pool,
        rsettings.database.schema,
        secret_box(rsettings.notifications, rsettings.runtime.data_dir),
        policy=rsettings.notifications.webhook_policy,
    )
    owner = Actor(subject="ops", roles=frozenset({Role.OPERATOR}))
    subs = []
    for name in ("a", "b"):
        saved = await store.create(
            owner,
            SubscriptionDraft(
                channel="WEBHOOK",
                url=f"{receiver.base}/lag/30/{name}",
                kinds=["TARIFF_PRICE_CHANGED"],
            ),
        )
        subs.append(saved.subscription.id)
    child: subprocess.Popen[bytes] | None = None
    try:
        spec = TariffSpec(region=REGION, currency="EUR", base_price=Decimal("0.25"), timezone="UTC")
        created = await asyncio.to_thread(book.create_tariff, spec, CommandContext(actor=SYSTEM))
        events = [event_id(created.tariff.id, 1)]
        events += await asyncio.to_thread(overrides, book, FIRST_BATCH, 0)
        await relay.relay_available()

        child = start_notifier(rsettings)

        async def some_sent() -> bool:
            return len(receiver.requests) >= 12

        await eventually(some_sent, within=30, what="the first notifier delivering")
        child.send_signal(signal.SIGKILL)
        await asyncio.to_thread(child.wait, 10)
        sent_before_kill = len(receiver.requests)
        assert sent_before_kill < 2 * len(events)  # killed mid-way, not after the end

        # Events recorded while the notifier is down wait in the stream.
        events += await asyncio.to_thread(overrides, book, SECOND_BATCH, FIRST_BATCH)
        await relay.relay_available()
        child = start_notifier(rsettings)

        async def all_delivered() -> bool:
            async with pool.connection() as conn:
                cur = await conn.execute(
                    sql.SQL(
                        "SELECT count(*) FILTER (WHERE status = 'DELIVERED'), count(*), "
                        "count(DISTINCT (event_id, subscription_id)) "
                        "FROM {}.notification_deliveries"
                    ).format(sql.Identifier(rsettings.database.schema))
                )
                row = await cur.fetchone()
            assert row is not None
            assert row[1] == row[2]  # one row per (event, subscription), whatever happened
            return bool(row[0] == row[1] == 2 * len(events))

        # Leases of deliveries the killed process held expire after timeout + 5 s.
        await eventually(all_delivered, within=40, what="every delivery after the restart")

        received = Counter(
            (r.headers["x-hes-event-id"], r.path.rsplit("/", 1)[1]) for r in receiver.requests
        )
        wanted = {(str(e), name) for e in events for name in ("a", "b")}
        assert set(received) == wanted  # every event reached both endpoints
        resent = sum(n - 1 for n in received.values())
        # Only deliveries in flight at the kill can be sent twice (4 per endpoint at most).
        assert resent <= 8, received
        async with pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL(
                    "SELECT count(*), count(*) FILTER (WHERE verdict = 'SUCCESS') "
                    "FROM {}.notification_attempts"
                ).format(sql.Identifier(rsettings.database.schema))
            )
            attempts = await cur.fetchone()
        assert attempts == (2 * len(events), 2 * len(events))
        child.send_signal(signal.SIGTERM)  # a clean stop: running sends finish first
        assert await asyncio.to_thread(child.wait, 30) == 0
        log = (rsettings.runtime.data_dir / "notifier.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        relay.close()
        await nc.close()
        await pool.close()
        book.close()
