"""The DLMS push listener over real TCP, NATS and PostgreSQL: good plain and ciphered pushes
become readings; unknown, malformed, unprotected and replayed ones are rejected, counted and
dead-lettered; the listener survives all of them."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import nats
import nats.errors
import pytest

from adapters.dlms import wrapper
from adapters.dlms.cipher import SC_AUTHENTICATED_ENCRYPTED, cipher_apdu
from adapters.dlms.link import WRAPPER_HEADER
from adapters.dlms.push_layout import PushLayout
from adapters.dlms.push_listener import PushListener, Received, encode_notification
from adapters.dlms.simulator import simulated_keys
from adapters.metrics import DLMS_PUSHES
from bootstrap.dlms_process import DlmsService
from bootstrap.workers import SupervisedProjection
from commands.meters import MeterRegistry
from config.settings import Settings
from domain.obis import BY_OBIS
from domain.values import SecurityLevel, Transport
from tests.integration.dlms_support import (
    dlms_settings,
    eventually,
    meter_visible,
    profile,
    register,
    scalar,
    set_simulated_keys,
)
from tests.worker_thread import WorkerThread

pytestmark = pytest.mark.integration
SIM = "SIM0000042"  # the simulated meter whose keys and system title the ciphered meter has


@pytest.fixture(scope="module")
def registry(settings: Settings) -> Iterator[MeterRegistry]:
    """The meter registry of the test schema."""
    app = MeterRegistry(env=settings.database.eventsourcing_env())
    yield app
    app.close()


@pytest.fixture(scope="module")
async def listener(settings: Settings) -> AsyncIterator[PushListener]:
    """A push listener on a free port, wired like the DLMS process wires it."""
    service = DlmsService(dlms_settings(settings))
    await service.open()
    wired = service.listener
    running = PushListener(wired.outlet, wired.dead_letters, wired.directory, "127.0.0.1", 0)
    stop = asyncio.Event()
    await running.start()
    task = asyncio.create_task(running.run(stop))
    yield running
    stop.set()
    await task
    await service.close()


async def send(listener: PushListener, *frames: bytes, close_early: bool = False) -> None:
    """Write raw bytes to the listener on one connection, then close it."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", listener.bound_port)
    for frame in frames:
        writer.write(frame)
    await writer.drain()
    if close_early:
        writer.write_eof()
    await asyncio.sleep(0.05)
    writer.close()
    await writer.wait_closed()


def push(name: str, values: tuple[int, int, int, int] = (1_000_000, 20, 2301, 512)) -> bytes:
    """A wrapper frame with a plain notification from device ``name``."""
    return wrapper.encode(
        1, 1, encode_notification(name, datetime.now(UTC).replace(microsecond=0), values)
    )


def ciphered(ic: int, name: str = "HESPUSH00002", sim: str = SIM) -> bytes:
    """A wrapper frame with a notification ciphered with simulated meter ``sim``'s keys and title.

    Each counter value stamps its own minute (pushes of the same instant would be duplicates).
    """
    keys = simulated_keys(sim)
    at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=60 - ic)
    apdu = encode_notification(name, at, (2_000_000 + ic, 0, 2290, 100))
    return wrapper.encode(
        1,
        1,
        cipher_apdu(
            apdu,
            security_control=SC_AUTHENTICATED_ENCRYPTED,
            system_title=keys.system_title,
            invocation_counter=ic,
            keys=keys.keys,
            general=True,
        ),
    )


def counted(outcome: str) -> float:
    """The push counter of one outcome."""
    return float(DLMS_PUSHES.labels(outcome)._value.get())


async def stored(settings: Settings, meter: UUID) -> int:
    """Readings stored for a meter."""
    return int(
        await scalar(settings, "SELECT count(*) FROM {s}.readings WHERE meter_id = %s", meter)
    )


async def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    """Every dead-lettered push of this run."""
    assert settings.nats.url
    nc = await nats.connect(settings.nats.url)
    sub = await nc.jetstream().subscribe(
        f"{settings.nats.prefix.lower()}.hes.deadletter.readings.dlms_push", ordered_consumer=True
    )
    found = []
    try:
        while True:
            msg = await sub.next_msg(timeout=1)
            found.append(json.loads(msg.data))
    except nats.errors.TimeoutError:
        pass
    await nc.close()
    return found


async def test_pushes_are_accepted_or_rejected_counted_and_dead_lettered(
    settings: Settings,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    reading_worker: WorkerThread,
    registry: MeterRegistry,
    listener: PushListener,
) -> None:
    plain = register(registry, profile(4059), serial="PUSH00001")
    hls = register(
        registry, profile(4059, Transport.WRAPPER, SecurityLevel.HLS_GMAC), serial="PUSH00002"
    )
    version = set_simulated_keys(settings, registry, hls, SIM, with_title=True)
    await meter_visible(settings, plain)
    await meter_visible(settings, hls, version)
    before = {
        o: counted(o)
        for o in ("accepted", "unknown-meter", "malformed", "replay", "unprotected", "decipher")
    }

    # good: plain by logical device name, ciphered by system title (twice, counter growing)
    await send(listener, push("HESPUSH00001"), ciphered(ic=10), ciphered(ic=11))
    assert await eventually(lambda: _at_least(settings, plain, 4)) and await eventually(
        lambda: _at_least(settings, hls, 8)
    )
    voltage = await scalar(
        settings,
        "SELECT value FROM {s}.readings WHERE meter_id = %s AND quantity = %s",
        plain,
        BY_OBIS["1.0.32.7.0.255"].id,
    )
    assert voltage == 230.1

    # bad: unknown device, replayed counter, clear text from an HLS meter, wrong key material,
    # a non-notification APDU, a broken body, a broken wrapper header, a truncated APDU
    keys = simulated_keys(SIM)
    tampered = bytearray(ciphered(ic=12))
    tampered[-1] ^= 0xFF
    await send(
        listener,
        push("HESNOSUCHMETER"),
        ciphered(ic=11),
        push("HESPUSH00002"),
        bytes(tampered),
        wrapper.encode(1, 1, b"\x99\x01\x02"),
        wrapper.encode(1, 1, b"\x0f\x00\x00\x00\x01\x00\x02\x09"),
    )
    await send(listener, struct.pack(">HHHH", 7, 1, 1, 5) + b"hello")
    await send(listener, struct.pack(">HHHH", 1, 1, 1, 100) + b"\x0f\x00", close_early=True)
    assert keys.system_title  # (the tampered frame still names SIM's title)

    # the listener is still up and still accepts
    await send(listener, ciphered(ic=13))
    await eventually(lambda: _at_least(settings, hls, 12))

    async def all_counted() -> bool:
        return counted("malformed") - before["malformed"] >= 4

    await eventually(all_counted, seconds=10)
    assert counted("accepted") - before["accepted"] == 4
    assert counted("unknown-meter") - before["unknown-meter"] == 1
    assert counted("replay") - before["replay"] == 1
    assert counted("unprotected") - before["unprotected"] == 1
    assert counted("decipher") - before["decipher"] == 1
    assert counted("malformed") - before["malformed"] == 4
    letters = await dead_letters(settings)
    rules = sorted(letter["rule"] for letter in letters)
    assert rules == sorted(
        ["unknown-meter", "replay", "unprotected", "decipher"] + ["malformed"] * 4
    )
    replay = next(letter for letter in letters if letter["rule"] == "replay")
    assert replay["serial"] == "PUSH00002" and "invocation counter 11" in replay["message"]
    assert all(letter["data"] is not None and letter["peer"] for letter in letters)
    assert (
        await scalar(
            settings,
            "SELECT server_last FROM {s}.dlms_invocation_counters WHERE meter_id = %s",
            hls,
        )
        == 13
    )


async def test_listeners_side_by_side_refuse_a_push_replayed_to_the_other(
    settings: Settings,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    reading_worker: WorkerThread,
    registry: MeterRegistry,
    listener: PushListener,
) -> None:
    hls = register(
        registry, profile(4059, Transport.WRAPPER, SecurityLevel.HLS_GMAC), serial="PUSH00005"
    )
    sim = "SIM0000045"
    version = set_simulated_keys(settings, registry, hls, sim, with_title=True)
    await meter_visible(settings, hls, version)
    other_service = DlmsService(dlms_settings(settings))
    await other_service.open()
    wired = other_service.listener
    other = PushListener(wired.outlet, wired.dead_letters, wired.directory, "127.0.0.1", 0)
    await other.start()
    before = counted("replay")
    try:

        def frame(ic: int) -> Received:
            return _received(ciphered(ic=ic, name="HESPUSH00005", sim=sim))

        first = await listener.process([frame(30)])
        replayed = await other.process([frame(30)])
        older = await other.process([frame(29)])
        newer = await other.process([frame(31)])
        # The same push to both at once: exactly one of them takes it.
        both = await asyncio.gather(listener.process([frame(32)]), other.process([frame(32)]))
    finally:
        await other_service.close()

    assert first == (1, 0) and replayed == (0, 1) and older == (0, 1) and newer == (1, 0)
    assert sorted(both) == [(0, 1), (1, 0)]
    assert counted("replay") - before == 3
    assert await eventually(lambda: _at_least(settings, hls, 12))
    assert (
        await scalar(
            settings,
            "SELECT server_last FROM {s}.dlms_invocation_counters WHERE meter_id = %s",
            hls,
        )
        == 32
    )


def _received(frame: bytes) -> Received:
    """One whole wrapper frame as the listener reads it off a socket."""
    return Received("127.0.0.1:40000", frame[WRAPPER_HEADER.size :], datetime.now(UTC))


async def _at_least(settings: Settings, meter: UUID, count: int) -> bool:
    return await stored(settings, meter) >= count


async def test_a_meter_s_pushes_split_anywhere_and_over_many_batches_are_taken_in_order(
    settings: Settings,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    reading_worker: WorkerThread,
    registry: MeterRegistry,
) -> None:
    sim = "SIM0000043"
    meter = register(
        registry, profile(4060, Transport.WRAPPER, SecurityLevel.HLS_GMAC), serial="PUSH00003"
    )
    version = set_simulated_keys(settings, registry, meter, sim, with_title=True)
    await meter_visible(settings, meter, version)
    keys = simulated_keys(sim)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=4)
    stream = b"".join(
        wrapper.encode(
            1,
            1,
            cipher_apdu(
                encode_notification("HESPUSH00003", start + timedelta(minutes=n), (n, 0, 2300, 9)),
                security_control=SC_AUTHENTICATED_ENCRYPTED,
                system_title=keys.system_title,
                invocation_counter=1_000 + n,
                keys=keys.keys,
                general=True,
            ),
        )
        for n in range(200)
    )
    before = {o: counted(o) for o in ("accepted", "replay", "malformed")}
    # Small batches, two published at once: the counters must still be checked in order.
    service = DlmsService(dlms_settings(settings))
    await service.open()
    wired = service.listener
    small = PushListener(
        wired.outlet, wired.dead_letters, wired.directory, "127.0.0.1", 0, max_batch=8
    )
    stop = asyncio.Event()
    await small.start()
    task = asyncio.create_task(small.run(stop))
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", small.bound_port)
        for piece in range(0, len(stream), 37):  # frames cut at arbitrary byte boundaries
            writer.write(stream[piece : piece + 37])
            if piece % 740 == 0:
                await writer.drain()
                await asyncio.sleep(0.001)
        await writer.drain()
        await eventually(lambda: _at_least(settings, meter, 800))
        writer.close()
        await writer.wait_closed()
    finally:
        stop.set()
        await task
        await service.close()
    assert small.accepted == 200 and small.rejected == 0
    assert counted("accepted") - before["accepted"] == 200
    assert counted("replay") == before["replay"] and counted("malformed") == before["malformed"]
    last = "SELECT server_last FROM {s}.dlms_invocation_counters WHERE meter_id = %s"
    assert await scalar(settings, last, meter) == 1_199


async def test_the_fleet_push_layout_decides_how_bodies_are_read(
    settings: Settings,
    projection: SupervisedProjection,
    reading_worker: WorkerThread,
    registry: MeterRegistry,
) -> None:
    layout = PushLayout.parse("1.0.1.8.0.255:3:30,1.0.32.7.0.255:-1:35")
    meter = register(registry, profile(4061), serial="PUSH00004")
    await meter_visible(settings, meter)
    at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    before = {o: counted(o) for o in ("accepted", "malformed")}
    service = DlmsService(dlms_settings(settings))
    await service.open()
    wired = service.listener
    custom = PushListener(
        wired.outlet, wired.dead_letters, wired.directory, "127.0.0.1", 0, layout=layout
    )
    stop = asyncio.Event()
    await custom.start()
    task = asyncio.create_task(custom.run(stop))
    try:
        mine = encode_notification("HESPUSH00004", at, (42, 2317), layout=layout)
        # the default layout's four values are not this fleet's push
        await send(custom, wrapper.encode(1, 1, mine), push("HESPUSH00004"))
        await eventually(lambda: _at_least(settings, meter, 2))
        await eventually(lambda: _handled(custom, 2))
    finally:
        stop.set()
        await task
        await service.close()
    assert (custom.accepted, custom.rejected) == (1, 1)
    assert counted("malformed") - before["malformed"] == 1
    energy = "SELECT value FROM {s}.readings WHERE meter_id = %s AND quantity = %s"
    assert await scalar(settings, energy, meter, BY_OBIS["1.0.1.8.0.255"].id) == 42_000.0
    assert await scalar(settings, energy, meter, BY_OBIS["1.0.32.7.0.255"].id) == 231.7
    assert await stored(settings, meter) == 2


async def _handled(listener: PushListener, count: int) -> bool:
    return listener.accepted + listener.rejected >= count
