"""The event relay: every event once, in position order, across crashes; tail as a consumer."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import nats
import psycopg
import pytest
from eventsourcing.persistence import Tracking
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from psycopg import sql
from typer.testing import CliRunner

from adapters.nats.cloudevents import decode_cloudevent, event_id
from adapters.nats.event_relay import EventRelay
from adapters.nats.streams import delete_streams
from adapters.nats.subjects import event_filter
from bootstrap.embedded import spawn_child
from bootstrap.migrate import migrate
from commands.context import SYSTEM, CommandContext
from commands.meters import MeterRegistry
from config.settings import Settings
from domain.meter import Meter
from domain.values import ConnectionProfile, Location, MeterSpec
from hes.cli import app
from tests.conftest import RUN_ID, new_serial
from tests.services import Services

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVENTS_PER_METER = 4


def _isolated(services: Services, tag: str) -> Settings:
    settings = Settings.of(
        database_url=services.database_url,
        nats_url=services.nats_url,
        db_schema=f"{tag}_{RUN_ID}",
        nats_prefix=f"{tag.upper()}{RUN_ID}_",
    )
    asyncio.run(migrate(settings))
    return settings


def _drop(settings: Settings) -> None:
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


@pytest.fixture(scope="module")
def relay_settings(services: Services) -> Iterator[Settings]:
    """A schema and stream prefix of this module's own, so positions start at 1."""
    settings = _isolated(services, "r")
    yield settings
    _drop(settings)


def _write_meters(registry: MeterRegistry, count: int, pause: float = 0.0) -> None:
    ctx = CommandContext(actor=SYSTEM)
    for _ in range(count):
        time.sleep(pause)
        meta = ctx.meta("test")
        spec = MeterSpec(
            serial=new_serial("EV"),
            manufacturer="Acme",
            model="K1",
            firmware="1",
            phases=3,
            region="R",
            area="A",
            connection=ConnectionProfile(host="127.9.9.9"),
        )
        meter = Meter.register(spec, meta)
        meter.commission(Location(address="x"), "ACC-1", meta)
        meter.assign_customer("ACC-2", meta)
        meter.change_connection_profile(ConnectionProfile(host="127.9.9.10"), meta)
        registry.save(meter)


def _store(settings: Settings) -> list[tuple[int, str]]:
    """(position, CloudEvents id) of every recorded event, in position order."""
    assert settings.database.url
    with psycopg.connect(settings.database.url) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT notification_id, originator_id, originator_version "
                "FROM {}.meters_events ORDER BY notification_id"
            ).format(sql.Identifier(settings.database.schema))
        ).fetchall()
    return [(int(n), str(event_id(UUID(str(o)), int(v)))) for n, o, v in rows]


def _tracked(settings: Settings) -> int:
    assert settings.database.url
    with psycopg.connect(settings.database.url) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT coalesce(max(notification_id), 0) FROM {}.event_relay_tracking "
                "WHERE application_name = 'meters'"
            ).format(sql.Identifier(settings.database.schema))
        ).fetchone()
    assert row
    return int(row[0])


async def _stream(settings: Settings) -> list[tuple[int, dict[str, Any], str, str]]:
    """(stream seq, CloudEvent, subject, Nats-Msg-Id) of every relayed event, in stream order."""
    nc = await nats.connect(settings.nats.url or "")
    try:
        js = nc.jetstream()
        info = await js.stream_info(settings.nats.stream("HES_EVENTS"))
        total = info.state.messages
        sub = await js.subscribe(
            event_filter(settings.nats.prefix),
            stream=settings.nats.stream("HES_EVENTS"),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        result: list[tuple[int, dict[str, Any], str, str]] = []
        while len(result) < total:
            msg = await sub.next_msg(timeout=5)
            assert msg.metadata.sequence is not None
            result.append(
                (
                    msg.metadata.sequence.stream,
                    decode_cloudevent(msg.data),
                    msg.subject,
                    (msg.headers or {}).get("Nats-Msg-Id", ""),
                )
            )
        await sub.unsubscribe()
        return result
    finally:
        await nc.close()


def _relay(nc: NatsClient, settings: Settings, **kwargs: Any) -> EventRelay:
    return EventRelay(
        nc,
        settings.database.eventsourcing_env(),
        application_name="meters",
        source=settings.events_source,
        prefix=settings.nats.prefix,
        **kwargs,
    )


async def test_relays_every_event_once_in_position_order(relay_settings: Settings) -> None:
    s = relay_settings
    registry = MeterRegistry(env=s.database.eventsourcing_env())
    await asyncio.to_thread(_write_meters, registry, 500)
    registry.close()
    nc = await nats.connect(s.nats.url or "")
    relay = _relay(nc, s)
    started = time.perf_counter()
    relayed = await relay.relay_available()
    elapsed = time.perf_counter() - started
    relay.close()
    await nc.close()
    print(
        f"\nrelay catch-up: {relayed} events in {elapsed:.3f}s = {relayed / elapsed:.0f} events/s"
    )

    store = _store(s)
    assert relayed == len(store) == 500 * EVENTS_PER_METER
    assert _tracked(s) == store[-1][0]
    stream = await _stream(s)
    assert [(ce["position"], ce["id"]) for _, ce, _, _ in stream] == store
    assert [msg_id for _, _, _, msg_id in stream] == [i for _, i in store]
    for _, ce, subject, _ in stream:
        assert subject == f"{s.nats.prefix.lower()}.hes.events.meter.{ce['type'].split('.')[2]}"
        assert ce["source"] == f"urn:hes:{s.database.schema}"


async def test_crash_between_publish_and_tracking_is_deduplicated(
    relay_settings: Settings,
) -> None:
    s = relay_settings
    registry = MeterRegistry(env=s.database.eventsourcing_env())
    await asyncio.to_thread(_write_meters, registry, 25)
    registry.close()
    nc = await nats.connect(s.nats.url or "")
    crashing = _relay(nc, s, page_size=60)
    before = _tracked(s)

    def crash(tracking: Tracking) -> None:
        raise RuntimeError("killed before the tracking commit")

    crashing._tracking.insert_tracking = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await crashing.relay_available()
    crashing.close()
    assert _tracked(s) == before  # published, but progress not recorded

    relay = _relay(nc, s, page_size=60)
    relayed = await relay.relay_available()
    relay.close()
    await nc.close()
    assert relayed == 25 * EVENTS_PER_METER
    assert relay.stats.duplicates == 60  # the first page again: JetStream dropped every one
    stream = await _stream(s)
    assert [(ce["position"], ce["id"]) for _, ce, _, _ in stream] == _store(s)


async def test_relay_wakes_on_new_events(relay_settings: Settings) -> None:
    s = relay_settings
    nc = await nats.connect(s.nats.url or "")
    relay = _relay(nc, s)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    received: asyncio.Queue[float] = asyncio.Queue()

    async def arrived(_msg: Msg) -> None:
        received.put_nowait(time.perf_counter())

    sub = await nc.subscribe(event_filter(s.nats.prefix, "meter.Registered"), cb=arrived)
    registry = MeterRegistry(env=s.database.eventsourcing_env())
    ctx = CommandContext(actor=SYSTEM)
    latencies = []
    try:
        await asyncio.sleep(0.5)  # caught up and listening
        for _ in range(20):
            spec = MeterSpec(
                serial=new_serial("LAT"),
                manufacturer="Acme",
                model="K1",
                firmware="1",
                phases=1,
                region="R",
                area="A",
                connection=ConnectionProfile(host="127.9.9.9"),
            )
            saved = time.perf_counter()
            await asyncio.to_thread(registry.register_meter, spec, ctx)
            latencies.append(await asyncio.wait_for(received.get(), 5) - saved)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await sub.unsubscribe()
        registry.close()
        relay.close()
        await nc.close()
    print(
        f"\nrelay added latency (save → on NATS): median {statistics.median(latencies) * 1000:.1f}"
        f" ms, max {max(latencies) * 1000:.1f} ms"
    )
    assert statistics.median(latencies) < 0.25


def test_tail_from_seq_prints_the_expected_lines(relay_settings: Settings) -> None:
    s = relay_settings
    stream = asyncio.run(_stream(s))
    assert len(stream) >= 10
    env = {
        "HES_NATS_URL": s.nats.url or "",
        "HES_NATS_PREFIX": s.nats.prefix,
        "HES_DB_SCHEMA": s.database.schema,
    }
    runner = CliRunner()
    result = runner.invoke(
        app, ["events", "tail", "--from-seq", "3", "--limit", "5", "--idle-timeout", "5"], env=env
    )
    assert result.exit_code == 0, result.output
    lines = [decode_cloudevent(line.encode()) for line in result.stdout.splitlines()]
    assert lines == [ce for seq, ce, _, _ in stream if 3 <= seq <= 7]

    # A durable consumer resumes after its last acknowledged event.
    args = ["events", "tail", "--durable", "tail-test", "--filter", "meter.*", "--limit", "4"]
    first = runner.invoke(app, args, env=env)
    second = runner.invoke(app, args, env=env)
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    got = [decode_cloudevent(x.encode()) for x in (first.stdout + second.stdout).splitlines()]
    assert got == [ce for _, ce, _, _ in stream[:8]]


def _relay_process(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HES_DATABASE_URL": settings.database.url or "",
        "HES_NATS_URL": settings.nats.url or "",
        "HES_DB_SCHEMA": settings.database.schema,
        "HES_NATS_PREFIX": settings.nats.prefix,
        "HES_LOG_LEVEL": "WARNING",
    }
    return spawn_child(
        [sys.executable, "-m", "hes.cli", "events", "relay"],
        death_signal=signal.SIGTERM,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _durable_from_start(settings: Settings, expected: int) -> list[dict[str, Any]]:
    nc = await nats.connect(settings.nats.url or "")
    try:
        sub = await nc.jetstream().pull_subscribe(
            event_filter(settings.nats.prefix, "meter.*"),
            durable="billing",
            stream=settings.nats.stream("HES_EVENTS"),
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT),
        )
        received: list[dict[str, Any]] = []
        while len(received) < expected:
            for msg in await sub.fetch(200, timeout=5):
                received.append(decode_cloudevent(msg.data))
                await msg.ack()
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=1)  # nothing more: no event twice
        return received
    finally:
        await nc.close()


def test_relay_killed_repeatedly_delivers_each_event_once_in_order(services: Services) -> None:
    settings = _isolated(services, "rk")
    registry = MeterRegistry(env=settings.database.eventsourcing_env())
    meters = 400
    writer = threading.Thread(target=_write_meters, args=(registry, meters, 0.02))
    rng = random.Random(11)
    kills: list[tuple[int, int]] = []
    try:
        writer.start()
        deadline = time.monotonic() + 180
        while (writer.is_alive() or len(kills) < 6) and time.monotonic() < deadline:
            before = _tracked(settings)
            process = _relay_process(settings)
            # Kill once it is relaying (a loaded machine may take seconds to start Python),
            # at a random moment after that.
            started = time.monotonic()
            while (
                _tracked(settings) == before
                and writer.is_alive()
                and time.monotonic() - started < 30
            ):
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.6))
            process.send_signal(signal.SIGKILL)
            process.wait()
            store = _store(settings)
            kills.append((store[-1][0] if store else 0, _tracked(settings)))
        writer.join()

        process = _relay_process(settings)
        try:
            store = _store(settings)
            while _tracked(settings) < store[-1][0] and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            process.terminate()
            process.wait(10)

        assert len(store) == meters * EVENTS_PER_METER
        # Some kills must have found the relay behind the writer, or the test proved nothing.
        assert any(0 < relayed < recorded for recorded, relayed in kills), kills
        stream = asyncio.run(_stream(settings))
        assert [(ce["position"], ce["id"]) for _, ce, _, _ in stream] == store
        received = asyncio.run(_durable_from_start(settings, len(store)))
        assert [(ce["position"], ce["id"]) for ce in received] == store
    finally:
        registry.close()
        _drop(settings)
