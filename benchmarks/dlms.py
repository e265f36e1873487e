"""``hes bench dlms``: register reads and load-profile rows per second against simulated meters,
push notifications decoded and published per second; bare loopback TCP measured alongside.

Everything runs in a scratch schema and stream prefix. The simulated meters and the push
generator are child processes, so the collector and the listener have this process's event
loop to themselves (as in ``hes up``, where they run in the DLMS child).
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import socket
import struct
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import psycopg
from psycopg import sql
from rich.console import Console

from adapters.dlms import wrapper
from adapters.dlms.cipher import SC_AUTHENTICATED_ENCRYPTED, cipher_apdu
from adapters.dlms.push_listener import PushListener, encode_notification
from adapters.dlms.simulator import simulated_keys
from adapters.nats.streams import delete_streams
from bootstrap.applications import meter_registry
from bootstrap.connections import connect_nats
from bootstrap.dlms_keys import key_service
from bootstrap.dlms_process import DlmsService
from bootstrap.dlms_process import dlms_projection as dlms_view_projection
from bootstrap.migrate import migrate
from bootstrap.workers import SupervisedProjection
from commands.context import SYSTEM, CommandContext
from config.settings import Settings
from domain.collection import Task
from domain.meter import meter_id
from domain.meter_keys import MeterKeys
from domain.values import ConnectionProfile, MeterSpec, SecurityLevel, Transport

console = Console(stderr=True)

_SINK = r"""
import socket, sys, threading
host, port, path, connections = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def send(i):
    data = open(f"{path}.{i}", "rb").read()
    s = socket.create_connection((host, port))
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()
threads = [threading.Thread(target=send, args=(i,)) for i in range(connections)]
[t.start() for t in threads]
[t.join() for t in threads]
"""

_ECHO = r"""
import asyncio, sys
async def handle(reader, writer):
    try:
        while True:
            data = await reader.read(4096)
            if not data:
                break
            writer.write(data)
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


class DlmsFigures(msgspec.Struct, kw_only=True):
    """What `hes bench dlms` measured (the JSON line it prints last)."""

    bench: str = "dlms"
    meters: int
    transport: str
    security: str
    concurrency: int
    register_read_seconds: float
    register_meters_per_s: float
    register_values: int
    register_values_per_s: float
    register_failures: int
    profile_meters: int
    profile_days: int
    profile_rows: int
    profile_seconds: float
    profile_rows_per_s: float
    pushes: int
    push_connections: int
    push_seconds: float
    pushes_per_s: float
    push_rejected: int
    baseline_tcp_round_trips_per_s: float
    """Bare asyncio request/response on loopback, same concurrency (the floor of any session)."""
    baseline_push_frames_per_s: float
    """The same push frames read by a bare asyncio wrapper reader (no decoding, no publishing)."""
    cpu_count: int
    started_at: str


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive free TCP ports on 127.0.0.1."""
    for base in range(30_000, 60_000 - count, count + 7):
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sock.bind(("127.0.0.1", port))
                sockets.append(sock)
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free port range")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_listening(port: int, seconds: float = 120.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port}") from None
            await asyncio.sleep(0.2)


def raise_file_limit(needed: int) -> None:
    """Raise this process's open-file limit to ``needed`` (within the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def tcp_round_trips(concurrency: int, seconds: float) -> float:
    """Bare request/response round trips per second on loopback (echo server child)."""
    port = _free_port()
    echo = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _ECHO, str(port), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert echo.stdout is not None
        await echo.stdout.readline()
        count = 0
        stop = time.monotonic() + seconds

        async def client() -> None:
            nonlocal count
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            message = b"\x00\x01\x00\x10\x00\x01\x00\x0d" + b"x" * 13
            while time.monotonic() < stop:
                writer.write(message)
                await reader.readexactly(len(message))
                count += 1
            writer.close()

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return count / (time.monotonic() - started)
    finally:
        echo.terminate()
        await echo.wait()


async def push_frames_baseline(blob: Path, frames: int, connections: int) -> float:
    """Wrapper frames per second read by a bare reader from the same generator."""
    received = 0
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        try:
            while True:
                header = await reader.readexactly(8)
                await reader.readexactly(struct.unpack(">HHHH", header)[3])
                received += 1
                if received == frames:
                    done.set()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    started = time.monotonic()
    sender = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SINK, "127.0.0.1", str(port), str(blob), str(connections)
    )
    await asyncio.wait_for(done.wait(), 300)
    elapsed = time.monotonic() - started
    await sender.wait()
    server.close()
    return frames / elapsed


def register_simulated_meters(
    settings: Settings, meters: int, base_port: int, transport: Transport, security: SecurityLevel
) -> None:
    """Register ``meters`` meters on consecutive ports (keys set for ciphered levels)."""
    registry = meter_registry(settings.database)
    client = {SecurityLevel.NONE: 16, SecurityLevel.LLS: 17, SecurityLevel.HLS_GMAC: 1}[security]
    try:
        rows: list[tuple[MeterSpec, str | None]] = []
        for i in range(meters):
            connection = ConnectionProfile(
                host="127.0.0.1",
                port=base_port + i,
                transport=transport,
                client_address=client,
                physical_address=17 if transport is Transport.HDLC else None,
                security=security,
            )
            spec = MeterSpec(
                serial=f"SIM{i:07d}",
                manufacturer="HES",
                model="Simulated",
                firmware="1.0",
                phases=3,
                region=f"R{i % 4}",
                area=f"Zone {i % 8}",
                connection=connection,
            )
            rows.append((spec, None))
        for start in range(0, len(rows), 500):
            registry.import_meters(rows[start : start + 500], CommandContext(actor=SYSTEM))
        if security is not SecurityLevel.NONE:
            keys = key_service(settings, registry)
            for spec, _ in rows:
                sim = simulated_keys(spec.serial)
                keys.set_keys(
                    meter_id(spec.serial),
                    MeterKeys(lls_password=sim.lls_password, ek=sim.ek, ak=sim.ak),
                    CommandContext(actor=SYSTEM),
                    system_title=sim.system_title,
                )
    finally:
        registry.close()


async def bench_dlms(
    settings: Settings,
    *,
    meters: int,
    transport: Transport,
    security: SecurityLevel,
    profile_meters: int,
    pushes: int,
    push_connections: int,
) -> DlmsFigures:
    """Run the measurement in a scratch schema and stream prefix, then clean up."""
    run = uuid.uuid4().hex[:8]
    s = settings.replace(db_schema=f"bench_{run}", nats_prefix=f"BENCH{run}_", dlms_retries=0)
    assert s.database.url and s.nats.url
    started_at = datetime.now(UTC).isoformat()
    raise_file_limit(4 * meters + 4096)
    await migrate(s)
    base_port = free_port_range(meters)
    state = tempfile.mkdtemp(prefix="hes-bench-dlms-")
    simulator = await start_simulator(meters, base_port, state)
    projection = SupervisedProjection(s)
    dlms_projection = dlms_view_projection(s)
    service = DlmsService(s)
    try:
        console.print(f"registering {meters} meters; {meters} simulated meters starting")
        await asyncio.to_thread(
            register_simulated_meters, s, meters, base_port, transport, security
        )
        projection.start()
        dlms_projection.start()
        await wait_meter_rows(s, meters)
        if security is not SecurityLevel.NONE:
            await wait_meter_keys(s, meters)
        await wait_listening(base_port + meters - 1)
        await service.open()

        console.print("baseline: bare TCP round trips on loopback")
        round_trips = await tcp_round_trips(s.dlms.concurrency, 3.0)

        targets = await service.store.targets(await meter_ids(s))
        console.print(f"full register read of {meters} meters ({s.dlms.concurrency} at once)")
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(service.collector.collect(t, {Task.REGISTERS}) for t in targets.values()),
            return_exceptions=True,
        )
        register_s = time.monotonic() - started
        failures = sum(
            1 for o in outcomes if isinstance(o, BaseException) or not o[Task.REGISTERS].ok
        )
        values = len(service.collector.register_set(next(iter(targets.values())))) * (
            meters - failures
        )
        console.print(f"  {register_s:.1f} s, {failures} failed")

        chosen = list(targets.values())[:profile_meters]
        console.print(f"load profile of {len(chosen)} meters, {s.dlms.profile_days} days each")
        started = time.monotonic()
        await asyncio.gather(*(service.collector.collect(t, {Task.PROFILE}) for t in chosen))
        profile_s = time.monotonic() - started
        rows = await _ledger_rows(s)

        console.print(f"pushes: {pushes} notifications over {push_connections} connections")
        blob = Path(state) / "pushes.bin"
        frames = _push_frames(pushes, meters, ciphered=security is SecurityLevel.HLS_GMAC)
        for i in range(push_connections):
            # A meter always pushes over the same connection, so its counters arrive in order.
            mine = [f for n, f in enumerate(frames) if n % meters % push_connections == i]
            await asyncio.to_thread(Path(f"{blob}.{i}").write_bytes, b"".join(mine))
        frames_rate = await push_frames_baseline(blob, pushes, push_connections)
        push_s, rejected = await _push(service, blob, pushes, push_connections)
    finally:
        await tear_down(s, simulator, [projection, dlms_projection], service, state)
    return DlmsFigures(
        meters=meters,
        transport=transport.value,
        security=security.value,
        concurrency=s.dlms.concurrency,
        register_read_seconds=round(register_s, 3),
        register_meters_per_s=round(meters / register_s, 1),
        register_values=values,
        register_values_per_s=round(values / register_s),
        register_failures=failures,
        profile_meters=len(chosen),
        profile_days=s.dlms.profile_days,
        profile_rows=rows,
        profile_seconds=round(profile_s, 3),
        profile_rows_per_s=round(rows / profile_s),
        pushes=pushes,
        push_connections=push_connections,
        push_seconds=round(push_s, 3),
        pushes_per_s=round(pushes / push_s),
        push_rejected=rejected,
        baseline_tcp_round_trips_per_s=round(round_trips),
        baseline_push_frames_per_s=round(frames_rate),
        cpu_count=os.cpu_count() or 0,
        started_at=started_at,
    )


async def start_simulator(
    meters: int, base_port: int, state: str, behaviour: str = "idis"
) -> asyncio.subprocess.Process:
    """``hes simulate --dlms`` with ``meters`` meters from ``base_port`` on, as a child."""
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "hes.cli", "simulate", "--dlms", "--meters", str(meters)),
        *("--base-port", str(base_port), "--state-dir", state, "--behaviour", behaviour),
        env={**os.environ, "HES_LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def tear_down(
    s: Settings,
    simulator: asyncio.subprocess.Process,
    workers: list[SupervisedProjection],
    service: DlmsService,
    state: str,
) -> None:
    """Stop the simulated meters, projections and DLMS side; drop the scratch schema and streams."""
    simulator.terminate()
    try:
        await asyncio.wait_for(simulator.wait(), 30)
    except TimeoutError:
        simulator.kill()
    for worker in workers:
        worker.stop()
    if service.nc is not None:
        await service.close()
    nc = await connect_nats(s.nats)
    await delete_streams(nc.jetstream(), s.nats.prefix)
    await nc.close()
    assert s.database.url is not None
    with psycopg.connect(s.database.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(s.database.schema)))
    shutil.rmtree(state, ignore_errors=True)


def _push_frames(count: int, meters: int, *, ciphered: bool) -> list[bytes]:
    """Notifications, one per meter and minute going back in time (HLS: general-glo)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0).timestamp()
    out = []
    for n in range(count):
        meter, round_ = n % meters, n // meters
        apdu = encode_notification(
            f"HESSIM{meter:07d}",
            datetime.fromtimestamp(now - round_ * 60, UTC),
            (1_000_000 - round_, round_ % 7, 2300, 150),
            invoke_id=n,
        )
        if ciphered:
            sim = simulated_keys(f"SIM{meter:07d}")
            apdu = cipher_apdu(
                apdu,
                security_control=SC_AUTHENTICATED_ENCRYPTED,
                system_title=sim.system_title,
                invocation_counter=0xF000_0000 + round_,  # above the sessions' counters
                keys=sim.keys,
                general=True,
            )
        out.append(wrapper.encode(1, 1, apdu))
    return out


async def _push(
    service: DlmsService, blob: Path, pushes: int, connections: int
) -> tuple[float, int]:
    wired = service.listener
    listener = PushListener(wired.outlet, wired.dead_letters, wired.directory, "127.0.0.1", 0)
    stop = asyncio.Event()
    await listener.start()
    task = asyncio.create_task(listener.run(stop))
    started = time.monotonic()
    sender = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SINK,
        "127.0.0.1",
        str(listener.bound_port),
        str(blob),
        str(connections),
    )
    deadline = started + 600
    while listener.accepted + listener.rejected < pushes:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {listener.accepted + listener.rejected} pushes handled")
        await asyncio.sleep(0.005)
    elapsed = time.monotonic() - started
    await sender.wait()
    stop.set()
    await task
    return elapsed, listener.rejected


async def meter_ids(s: Settings) -> list[uuid.UUID]:
    """The ids of the meters in the read model."""
    assert s.database.url
    async with await psycopg.AsyncConnection.connect(s.database.url) as conn:
        cur = await conn.execute(
            sql.SQL("SELECT id FROM {}.meters").format(sql.Identifier(s.database.schema))
        )
        return [r[0] for r in await cur.fetchall()]


async def wait_meter_rows(s: Settings, meters: int) -> None:
    """Wait until the meters read model holds ``meters`` rows."""
    deadline = time.monotonic() + 120
    while await count_rows(s, "meters") < meters:
        if time.monotonic() > deadline:
            raise RuntimeError("the meters projection did not catch up")
        await asyncio.sleep(0.2)


async def wait_meter_keys(s: Settings, meters: int) -> None:
    """Wait until the DLMS read model knows the keys of ``meters`` meters."""
    deadline = time.monotonic() + 300
    while await count_rows(s, "dlms_meter_state") < meters:
        if time.monotonic() > deadline:
            raise RuntimeError("the DLMS projection did not catch up")
        await asyncio.sleep(0.2)


async def count_rows(s: Settings, table: str) -> int:
    """Rows in one table of the scratch schema."""
    assert s.database.url
    async with await psycopg.AsyncConnection.connect(s.database.url) as conn:
        cur = await conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(s.database.schema), sql.Identifier(table)
            )
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _ledger_rows(s: Settings) -> int:
    assert s.database.url
    async with await psycopg.AsyncConnection.connect(s.database.url) as conn:
        cur = await conn.execute(
            sql.SQL(
                "SELECT coalesce(sum(length(replace(received::text, '0', ''))), 0) "
                "FROM {}.dlms_profile_ledger"
            ).format(sql.Identifier(s.database.schema))
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0
