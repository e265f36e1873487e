"""A poison event stalls a projection loudly, not silently; an operator skips it, recorded.

The whole path on a schema of this module's own (a stalled meters projection would stop every
other test): a meter event whose text holds a NUL byte is written straight through the event
store, bypassing the domain's validation, as a bug or an old release might have written it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import nats
import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY
from psycopg import sql
from typer.testing import CliRunner

from adapters.nats.cloudevents import event_id
from adapters.nats.streams import delete_streams
from api.app import create_app
from api.auth import TokenService
from bootstrap.container import Container
from bootstrap.migrate import migrate
from bootstrap.workers import SupervisedProjection
from commands.context import SYSTEM, CommandContext
from commands.meters import MeterRegistry
from config.settings import Settings
from domain.meter import Meter, meter_id
from domain.tariff import Tariff
from domain.values import ConnectionProfile, MeterSpec
from hes.cli import app
from tests.conftest import JWT_SECRET, RUN_ID, new_serial
from tests.services import Services

pytestmark = pytest.mark.integration
ADMIN = CommandContext(actor=SYSTEM)
BACKOFF = 0.3


@pytest.fixture(scope="module")
def psettings(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A schema and stream prefix of this module's own."""
    settings = Settings.of(
        database_url=services.database_url,
        nats_url=services.nats_url,
        db_schema=f"ps_{RUN_ID}",
        nats_prefix=f"PS{RUN_ID}_",
        data_dir=Path(tmp_path_factory.mktemp("stall")),
        jwt_secret=JWT_SECRET,
    )
    asyncio.run(migrate(settings))
    yield settings
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(settings.database.schema))
        )

    async def drop_streams() -> None:
        nc = await nats.connect(services.nats_url)
        await delete_streams(nc.jetstream(), settings.nats.prefix)
        await nc.close()

    asyncio.run(drop_streams())


def spec(serial: str, firmware: str = "1.0") -> MeterSpec:
    return MeterSpec(
        serial=serial,
        manufacturer="Acme",
        model="P1",
        firmware=firmware,
        phases=1,
        region="North",
        area="A",
        connection=ConnectionProfile(host="127.0.0.1"),
    )


def write_poison(registry: MeterRegistry, serial: str) -> int:
    """A Registered event with a NUL byte in its firmware, stored as is; its position."""
    meter = Meter.register(spec(serial), ADMIN.meta("registerMeter"))
    [event] = meter.collect_events()
    stored = registry.mapper.to_stored_event(event)
    poisoned = stored.state.replace(b'"firmware":"1.0"', b'"firmware":"1\\u0000x"')
    assert poisoned != stored.state
    poison = StoredEvent(stored.originator_id, stored.originator_version, stored.topic, poisoned)
    [position] = registry.recorder.insert_events([poison]) or [0]
    return position


def cli(settings: Settings, *args: str) -> Any:
    env = {
        "HES_DATABASE_URL": settings.database.url or "",
        "HES_NATS_URL": settings.nats.url or "",
        "HES_DB_SCHEMA": settings.database.schema,
        "HES_NATS_PREFIX": settings.nats.prefix,
        "HES_DATA_DIR": str(settings.runtime.data_dir),
        "HES_JWT_SECRET": JWT_SECRET,
    }
    return CliRunner().invoke(app, list(args), env=env)


def skip_position(
    settings: Settings, name: str, position: int, reason: str, actor: str = ""
) -> Any:
    """``hes projections skip`` (as ``actor`` when given)."""
    who = ("--actor", actor) if actor else ()
    args = ("--position", str(position), "--reason", reason, *who)
    return cli(settings, "projections", "skip", name, *args)


def has_row(settings: Settings, table: str, column: str, value: str) -> bool:
    """True when the read-model ``table`` has a row whose ``column`` is ``value``."""
    query = sql.SQL("SELECT 1 FROM {} WHERE {} = %s").format(
        sql.Identifier(settings.database.schema, table), sql.Identifier(column)
    )
    with psycopg.connect(settings.database.url or "") as conn:
        return conn.execute(query, (value,)).fetchone() is not None


def shown(settings: Settings, serial: str) -> bool:
    return has_row(settings, "meters", "serial", serial)


def stalled_gauge() -> float | None:
    return REGISTRY.get_sample_value("hes_projection_stalled", {"projection": "meters_view"})


def failures() -> float:
    value = REGISTRY.get_sample_value(
        "hes_projection_failures_total", {"projection": "meters_view"}
    )
    return value or 0.0


def about_it(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Log records (warnings and worse, any logger, any thread) about the stalled projection."""
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING
        and ("meters_view" in r.getMessage() or "NUL" in r.getMessage())
    ]


async def ready(settings: Settings, tokens: TokenService) -> tuple[int, dict[str, Any]]:
    async with AsyncTestClient(app=create_app(Container(settings), tokens)) as client:
        answer = await client.get("/health/ready")
    body: dict[str, Any] = answer.json()
    return answer.status_code, body


async def until(check: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_a_poison_event_stalls_loudly_and_an_audited_skip_resumes(
    psettings: Settings, tokens: TokenService, caplog: pytest.LogCaptureFixture
) -> None:
    registry = MeterRegistry(env=psettings.database.eventsourcing_env())
    worker = SupervisedProjection(psettings, max_backoff=BACKOFF)
    worker.start()
    try:
        before = new_serial("OK")
        registry.register_meter(spec(before), ADMIN)
        await until(lambda: shown(psettings, before))
        failed_before = failures()

        caplog.set_level(logging.INFO)
        poison_serial = new_serial("NUL")
        position = write_poison(registry, poison_serial)
        poison_id = event_id(meter_id(poison_serial), 1)
        after = new_serial("AFTER")
        registry.register_meter(spec(after), ADMIN)  # stuck behind the poison
        await until(lambda: failures() - failed_before >= 5)  # five tries, backing off

        # Readiness names the projection, the position and the event.
        code, body = await ready(psettings, tokens)
        assert code == 503, body
        check = body["checks"]["meters_view"]
        assert not check["ok"]
        assert f"meters_view stalled at position {position}" in check["detail"]
        assert str(poison_id) in check["detail"] and "NUL" in check["detail"]
        assert not body["checks"]["projections"]["ok"]
        assert stalled_gauge() == 1
        assert not shown(psettings, after)

        # The status command says the same, and exits 1.
        status = cli(psettings, "projections", "status", "--json")
        assert status.exit_code == 1, status.output
        [meters_view] = [r for r in json.loads(status.stdout) if r["name"] == "meters_view"]
        assert meters_view["stalled"] and meters_view["stall"]["position"] == position
        assert meters_view["lag"] == 2  # the poison and the meter after it

        # One log line for the whole streak, however many retries.
        stall_lines = about_it(caplog)
        assert len(stall_lines) == 1, [r.getMessage() for r in stall_lines]
        assert f"at position {position}" in stall_lines[0].getMessage()
        assert str(poison_id) in stall_lines[0].getMessage()

        # Only the event it is stuck at can be skipped.
        wrong = skip_position(psettings, "meters_view", position + 1, "x")
        assert wrong.exit_code == 1 and f"applies position {position} next" in wrong.output
        skipped = skip_position(
            psettings,
            "meters_view",
            position,
            "firmware text with a NUL byte, ticket OPS-17",
            actor="ops-anna",
        )
        assert skipped.exit_code == 0, skipped.output

        # It resumes: the later meter appears, readiness is back, one line says so.
        await until(lambda: shown(psettings, after))
        assert not shown(psettings, poison_serial)
        await until(lambda: not stalled_gauge())
        code, body = await ready(psettings, tokens)
        assert body["checks"]["meters_view"]["ok"], body
        assert code == 200, body
        lines = [r.getMessage() for r in about_it(caplog)]
        assert len(lines) == 2 and "resumed after" in lines[1], lines
        later = new_serial("LATER")
        registry.register_meter(spec(later), ADMIN)
        await until(lambda: shown(psettings, later))
    finally:
        worker.stop()
        registry.close()

    # Auditors see who skipped what and why; the skipped event itself stays in its log.
    history = cli(psettings, "audit", "history", "meters_view", "--json")
    assert history.exit_code == 0, history.output
    [opened, skip] = json.loads(history.stdout)
    assert (opened["type"], skip["type"]) == ("Opened", "PositionSkipped")
    assert skip["actor"] == "ops-anna" and skip["log"] == "operations"
    assert skip["payload"]["position"] == position
    assert skip["payload"]["event_id"] == str(poison_id)
    assert skip["payload"]["reason"] == "firmware text with a NUL byte, ticket OPS-17"
    registry = MeterRegistry(env=psettings.database.eventsourcing_env())
    try:
        [kept] = registry.recorder.select_notifications(position, 1)
        assert kept.originator_id == meter_id(poison_serial) and b"\\u0000" in kept.state
    finally:
        registry.close()
    status = cli(psettings, "projections", "status")
    assert status.exit_code == 0, status.output


async def test_a_relay_stalls_on_an_event_it_cannot_relay_until_skipped(
    psettings: Settings, tokens: TokenService
) -> None:
    from bootstrap.relay import SupervisedRelay
    from commands.tariffs import TariffBook
    from domain.pricing import TariffSpec

    book = TariffBook(env=psettings.database.eventsourcing_env())
    nc = await nats.connect(psettings.nats.url or "")
    stream = psettings.nats.stream("HES_EVENTS")

    async def relayed() -> int:
        info = await nc.jetstream().stream_info(stream)
        return int(info.state.messages)

    relay = SupervisedRelay(psettings, "tariffs", max_backoff=BACKOFF)
    relay.start()
    try:
        first = new_serial("R")
        book.create_tariff(
            TariffSpec(region=first, currency="EUR", base_price=Decimal("0.2"), timezone="UTC"),
            ADMIN,
        )
        await until_async(lambda: relayed(), 1)
        # A stored event without the timestamp every event has: no CloudEvent can be made.
        [position] = book.recorder.insert_events(
            [StoredEvent(uuid4(), 1, get_topic(Tariff.Created), b'{"region":"broken"}')]
        ) or [0]
        second = new_serial("R")
        book.create_tariff(
            TariffSpec(region=second, currency="EUR", base_price=Decimal("0.3"), timezone="UTC"),
            ADMIN,
        )
        await until(lambda: relay.streak.failures >= 3)
        code, body = await ready(psettings, tokens)
        assert code == 503
        detail = body["checks"]["event_relay_tariffs"]["detail"]
        assert f"event_relay_tariffs stalled at position {position}" in detail, detail
        assert await relayed() == 1

        skipped = skip_position(
            psettings, "event_relay_tariffs", position, "event without timestamp", actor="ops-ben"
        )
        assert skipped.exit_code == 0, skipped.output
        await until_async(lambda: relayed(), 2)
        await until(lambda: relay.streak.failures == 0)
    finally:
        relay.stop()
        book.close()
        await nc.close()


async def until_async(count: Any, expected: int, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while await count() != expected:
        assert time.monotonic() < deadline, f"never reached {expected}"
        await asyncio.sleep(0.1)


async def test_the_notifier_stalls_on_a_message_it_cannot_take_until_skipped(
    psettings: Settings, tokens: TokenService
) -> None:
    from adapters.nats.subjects import event_subject
    from bootstrap.notifier import SupervisedNotifier

    nc = await nats.connect(psettings.nats.url or "")
    js = nc.jetstream()

    async def publish(region: str) -> int:
        envelope = {
            "specversion": "1.0",
            "id": str(uuid4()),
            "source": "urn:hes:test",
            "type": "hes.tariff.Created.v1",
            "subject": str(uuid4()),
            "time": "2026-01-01T00:00:00Z",
            "aggregateversion": 1,
            "data": {"region": region, "currency": "EUR"},
        }
        subject = event_subject(psettings.nats.prefix, "tariff", "Created")
        ack = await js.publish(subject, json.dumps(envelope).encode())
        return int(ack.seq)

    def indexed(region: str) -> bool:
        return has_row(psettings, "notification_tariff_index", "region", region)

    notifier = SupervisedNotifier(psettings, max_backoff=BACKOFF)
    notifier.start()
    try:
        first, after = new_serial("N"), new_serial("N")
        await publish(first)
        await until(lambda: indexed(first))
        sequence = await publish("North\x00East")  # PostgreSQL text refuses NUL
        await publish(after)
        await until(lambda: notifier.streak.failures >= 3)
        assert not indexed(after)
        status = cli(psettings, "projections", "status", "--json")
        [row] = [r for r in json.loads(status.stdout) if r["name"] == "notifier"]
        assert row["stalled"] and row["stall"]["position"] == sequence, row
        code, body = await ready(psettings, tokens)
        assert code == 503
        assert f"notifier stalled at position {sequence}" in body["checks"]["notifier"]["detail"]

        wrong = skip_position(psettings, "notifier", sequence + 1, "x")
        assert wrong.exit_code == 1 and f"sequence {sequence}" in wrong.output
        skipped = skip_position(psettings, "notifier", sequence, "NUL in a region", actor="ops-cy")
        assert skipped.exit_code == 0, skipped.output
        await until(lambda: indexed(after))
        await until(lambda: notifier.streak.failures == 0)
    finally:
        notifier.stop()
        await nc.close()
    history = cli(psettings, "audit", "history", "notifier", "--json")
    [_, skip] = json.loads(history.stdout)
    assert (skip["actor"], skip["payload"]["position"]) == ("ops-cy", sequence)
