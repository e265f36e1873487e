"""`hes bench cluster`: HES scaled out on one machine, with a NATS server and a worker killed.

A 3-server NATS cluster on loopback ports (streams replicated three times), reading-worker
processes sharing the partitions through leases, and API replicas sharing one HTTP port
(SO_REUSEPORT). Gateways post readings to that port; a third of the way in, one NATS server and
one worker are killed (SIGKILL). Afterwards every reading an API acknowledged must be stored
exactly once. ``tests/e2e/test_cluster.py`` runs the same rig, smaller.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import psycopg
from psycopg import sql
from rich.console import Console

from adapters.nats.streams import delete_streams
from bootstrap.applications import meter_registry
from bootstrap.embedded import spawn_child
from bootstrap.migrate import migrate
from bootstrap.nats_cluster import NatsCluster, free_ports
from config.settings import Settings

QUANTITIES_PER_ITEM = 6
"""voltage, current, power, energy, power factor, frequency (the gateway form's fields)."""


class Phase(msgspec.Struct, kw_only=True):
    """Readings stored and acknowledged in one part of the run."""

    name: str
    seconds: float
    stored_per_s: float
    acknowledged_per_s: float


class ClusterFigures(msgspec.Struct, kw_only=True):
    """What `hes bench cluster` measured (the JSON line it prints last)."""

    bench: str = "cluster"
    nats_servers: int
    stream_replicas: int
    worker_processes: int
    api_replicas: int
    meters: int
    acknowledged: int
    """Readings the APIs answered 200 for (each request counted once, however often sent)."""
    stored: int
    """Rows in ``readings`` afterwards."""
    counted_by_status: int
    """Readings counted by the meter status (a reading written twice would count twice)."""
    counted_by_windows: int
    """Readings counted by the 30-minute windows."""
    resent_requests: int
    """Requests sent again after a 503 or a broken connection."""
    api_cpu_seconds: list[float]
    """CPU time of each API replica during the run (both served requests)."""
    phases: list[Phase]
    catch_up_seconds: float
    """From the end of posting until every acknowledged reading was stored."""
    killed: list[str]
    load_average_start: list[float]
    load_average_end: list[float]
    cpu_count: int
    started_at: str


@dataclass
class ClusterRig:
    """Everything of one cluster run; ``start`` brings it up, ``stop`` removes all of it."""

    settings: Settings
    workers: int = 3
    apis: int = 2
    meters: int = 1000
    ack_wait: float = 15.0
    nats_servers: int = 3
    """Servers of the NATS cluster started here; 0: use ``settings.nats.url`` as it is."""
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hes-cluster-")))
    cluster: NatsCluster | None = None
    env: dict[str, str] = field(default_factory=dict)
    worker_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    support_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    """Projections and event relays: run beside the workers, as in a deployment."""
    serials: list[str] = field(default_factory=list)
    secret: str = field(default_factory=lambda: uuid.uuid4().hex * 2)
    _spawned: int = 0
    _next_request: int = 0
    _start_ts: datetime = field(
        default_factory=lambda: datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    )
    _logs: dict[int, Path] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """The port every API replica listens on."""
        return f"http://127.0.0.1:{self.settings.api.port}"

    async def start(self, console: Console) -> None:
        """NATS cluster, schema, meters, worker processes, API replicas; ready to take load."""
        await self.prepare(console)
        await self.start_apis(self.apis, console)

    async def prepare(self, console: Console) -> None:
        """Everything but the API replicas: NATS, schema, meters, worker processes."""
        assert self.settings.database.url
        run = uuid.uuid4().hex[:8]
        nats_url, replicas = self.settings.nats.url, self.settings.nats.stream_replicas
        if self.nats_servers:
            with console.status(f"starting a {self.nats_servers}-server NATS cluster…"):
                self.cluster = NatsCluster(self.root / "nats", size=self.nats_servers).start()
            nats_url, replicas = self.cluster.url, min(3, self.nats_servers)
        (port,) = free_ports(1)
        self.settings = self.settings.replace(
            db_schema=f"cluster_{run}",
            nats_prefix=f"CLUSTER{run}_",
            nats_url=nats_url,
            stream_replicas=replicas,
            port=port,
            reuse_port=True,
            jwt_secret=self.secret,
            run_workers=False,
            run_dlms=False,
            rate_limit_per_minute=10_000_000,
            reading_ack_wait_seconds=self.ack_wait,
            data_dir=self.root / "data",
        )
        s = self.settings
        self.env = {
            **os.environ,
            "HES_DATABASE_URL": s.database.url or "",
            "HES_NATS_URL": s.nats.url or "",
            "HES_DB_SCHEMA": s.database.schema,
            "HES_NATS_PREFIX": s.nats.prefix,
            "HES_STREAM_REPLICAS": str(s.nats.stream_replicas),
            "HES_READING_PARTITIONS": str(s.readings.partitions),
            "HES_READING_ACK_WAIT_SECONDS": str(s.readings.ack_wait_seconds),
            "HES_JWT_SECRET": self.secret,
            "HES_PORT": str(port),
            "HES_REUSE_PORT": "true",
            "HES_RUN_WORKERS": "false",
            "HES_RUN_DLMS": "false",
            "HES_RATE_LIMIT_PER_MINUTE": "10000000",
            "HES_DATA_DIR": str(s.runtime.data_dir),
            "HES_LOG_LEVEL": "WARNING",
        }
        with console.status("migrating (streams with three replicas)…"):
            await migrate(s)
        with console.status(f"registering {self.meters:,} meters…"):
            await self._register()
        self.worker_procs = [self._spawn("workers", "run") for _ in range(self.workers)]

    async def start_apis(self, count: int, console: Console) -> None:
        """Start ``count`` API replicas on the shared port; wait for them and the leases."""
        self.api_procs = [self._spawn("up") for _ in range(count)]
        with console.status("waiting for the API replicas and the worker leases…"):
            await self._ready()

    def stop_apis(self) -> None:
        """Stop the API replicas (SIGTERM, then SIGKILL)."""
        _terminate(self.api_procs)
        self.api_procs = []

    async def stored(self) -> int:
        """Readings the workers committed so far (the meter status total)."""
        return await self._scalar("SELECT coalesce(sum(readings_total), 0) FROM {s}.meter_status")

    async def counts(self) -> dict[str, int]:
        """Rows in ``readings``; readings counted by the meter status and the 30-minute windows."""
        return {
            "stored": await self._scalar("SELECT count(*) FROM {s}.readings"),
            "status": await self.stored(),
            "windows": await self._scalar("SELECT coalesce(sum(count), 0) FROM {s}.readings_30m"),
        }

    def kill_worker(self, index: int) -> None:
        """SIGKILL worker process ``index``."""
        proc = self.worker_procs[index]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def api_cpu_seconds(self) -> list[float]:
        """CPU seconds each API replica has used (Linux: ``/proc/<pid>/stat``)."""
        return [cpu_seconds(proc.pid) for proc in self.api_procs]

    async def stop(self, keep_logs: bool = False) -> None:
        """Stop every process, drop the schema and streams, stop the NATS cluster.

        The processes' logs stay under ``root`` with ``keep_logs`` (after a failure).
        """
        _terminate(self.api_procs + self.worker_procs + self.support_procs)
        s = self.settings
        servers = (
            [n.url for n in self.cluster.nodes if n.alive]
            if self.cluster is not None
            else s.nats.servers
        )
        with contextlib.suppress(Exception):
            nc = await nats.connect(servers, connect_timeout=5)
            await delete_streams(nc.jetstream(), s.nats.prefix)
            await nc.close()
        if self.cluster is not None:
            self.cluster.stop()
        if s.database.url and s.database.schema.startswith("cluster_"):
            with psycopg.connect(s.database.url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                        sql.Identifier(s.database.schema)
                    )
                )
        if not keep_logs:
            shutil.rmtree(self.root, ignore_errors=True)

    async def post(
        self,
        seconds: float,
        concurrency: int,
        items: int,
        on_progress: Any = None,
    ) -> tuple[int, int, list[tuple[float, int]]]:
        """Post gateway batches for ``seconds``; (acknowledged readings, resent, ack timeline)."""
        from api.auth import TokenService
        from commands.context import Scope

        token = TokenService(
            self.secret, self.settings.auth.jwt_issuer, self.settings.auth.jwt_audience
        ).issue("cluster-gateway", [], scopes=[Scope.INGEST])
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        # Request n carries the instant start + n s: every call goes on where the last one
        # stopped, so that no reading repeats and every register grows.
        start_ts = self._start_ts
        counter = {"next": self._next_request, "acknowledged": 0, "resent": 0}
        timeline: list[tuple[float, int]] = []
        began = time.monotonic()

        def body(n: int) -> bytes:
            ts = (start_ts + timedelta(seconds=n)).isoformat()
            return msgspec.json.encode(
                [
                    {
                        "meter_id": self.serials[(n * items + k) % len(self.serials)],
                        "timestamp": ts,
                        "voltage": 230.5,
                        "current": 5.1,
                        "power_kw": 1.2,
                        "energy_kwh": 100.0 + n,
                        "power_factor": 0.95,
                        "frequency": 50.0,
                    }
                    for k in range(items)
                ]
            )

        async def poster(client: httpx.AsyncClient) -> None:
            while time.monotonic() - began < seconds:
                n = counter["next"]
                counter["next"] += 1
                content = body(n)
                while True:  # the same body until an API acknowledges it, as a gateway does
                    try:
                        reply = await client.post(
                            "/api/v1/telemetry/batch", content=content, headers=headers
                        )
                    except httpx.TransportError:
                        reply = None
                    if reply is not None and reply.status_code == 200:
                        answer = reply.json()
                        if answer["rejected"]:
                            raise RuntimeError(f"readings rejected: {answer['errors'][:3]}")
                        counter["acknowledged"] += int(answer["accepted"])
                        timeline.append((time.monotonic() - began, counter["acknowledged"]))
                        break
                    if reply is not None and reply.status_code not in (502, 503, 504):
                        raise RuntimeError(f"HTTP {reply.status_code}: {reply.text[:300]}")
                    counter["resent"] += 1
                    await asyncio.sleep(0.2)

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30, limits=limits) as client:
            # No keep-alive: each request is a new connection, spread over the replicas.
            await asyncio.gather(*(poster(client) for _ in range(concurrency)))
        self._next_request = counter["next"]
        return counter["acknowledged"], counter["resent"], timeline

    def _spawn(self, *command: str) -> subprocess.Popen[bytes]:
        self._spawned += 1
        path = self.root / f"{command[0]}-{self._spawned}.log"
        log = path.open("ab")
        # Dies with this process, however it ends: no orphans holding connections.
        proc = spawn_child(
            [sys.executable, "-m", "hes.cli", *command],
            death_signal=signal.SIGKILL,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._logs[proc.pid] = path
        return proc

    def _log_tail(self, pid: int, lines: int = 30) -> str:
        """The last lines a child wrote: why it died, printed where CI shows it."""
        path = self._logs.get(pid)
        if path is None or not path.exists():
            return f"(no log for process {pid})"
        text = path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {path.name} (last {len(text)} lines) ---\n" + "\n".join(text)

    async def _register(self) -> None:
        """Register the meters and project them (the meters read model the APIs look up)."""
        from commands.context import SYSTEM, CommandContext
        from domain.values import ConnectionProfile, MeterSpec

        s = self.settings
        self.serials = [f"CL-{m:07d}" for m in range(self.meters)]
        registry = meter_registry(s.database)
        try:
            specs: list[tuple[MeterSpec, str | None]] = [
                (
                    MeterSpec(
                        serial=serial,
                        manufacturer="Bench",
                        model="B1",
                        firmware="1",
                        phases=1,
                        region=f"R{i % 8}",
                        area=f"A{i % 64}",
                        connection=ConnectionProfile(host="127.0.0.2"),
                    ),
                    None,
                )
                for i, serial in enumerate(self.serials)
            ]
            for i in range(0, len(specs), 1000):
                await asyncio.to_thread(
                    registry.import_meters, specs[i : i + 1000], CommandContext(actor=SYSTEM)
                )
        finally:
            registry.close()
        # Kept running for the rig's life: API replicas run no workers (HES_RUN_WORKERS=false),
        # and their readiness counts on the projections and event relays keeping up.
        projection = self._spawn("projections", "run")
        self.support_procs += [projection, self._spawn("events", "relay")]
        deadline = time.monotonic() + 120
        while await self._scalar("SELECT count(*) FROM {s}.meters") < self.meters:
            if time.monotonic() > deadline or projection.poll() is not None:
                raise RuntimeError("the meters projection did not catch up")
            await asyncio.sleep(0.2)

    async def _ready(self, within: float = 180.0) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as client:
            while True:
                procs = self.api_procs + self.worker_procs + self.support_procs
                dead = [p for p in procs if p.poll() is not None]
                if dead:
                    tails = "\n".join(self._log_tail(p.pid) for p in dead)
                    raise RuntimeError(
                        f"exited during start-up: {[p.args for p in dead]} "
                        f"(logs in {self.root})\n{tails}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if (
                        await client.get("/health/ready")
                    ).status_code == 200 and await self._leases_shared():
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster not ready in {within} s (logs in {self.root})")
                await asyncio.sleep(0.2)

    async def _leases_shared(self) -> bool:
        owners = await self._scalar(
            "SELECT count(DISTINCT owner) FROM {s}.reading_leases WHERE owner IS NOT NULL"
        )
        held = await self._scalar("SELECT count(owner) FROM {s}.reading_leases")
        return owners == self.workers and held == self.settings.readings.partitions

    async def _scalar(self, query: str) -> int:
        assert self.settings.database.url
        async with await psycopg.AsyncConnection.connect(self.settings.database.url) as conn:
            cur = await conn.execute(
                sql.SQL(query).format(s=sql.Identifier(self.settings.database.schema))  # type: ignore[arg-type]
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0


async def run_cluster(
    rig: ClusterRig,
    console: Console,
    *,
    seconds: float,
    concurrency: int,
    items: int,
    settle: float = 10.0,
    catch_up_within: float = 180.0,
) -> ClusterFigures:
    """Post for ``seconds``, kill a NATS server and a worker a third of the way, then count."""
    started_at = datetime.now(UTC).isoformat()
    load_start = [round(x, 2) for x in os.getloadavg()]
    failed = True
    try:
        await rig.start(console)
        assert rig.cluster is not None
        samples: list[tuple[float, int]] = []
        kill_at = seconds / 3
        killed: list[str] = []
        began = time.monotonic()
        cpu_before = rig.api_cpu_seconds()

        async def sample() -> None:
            while True:
                samples.append((time.monotonic() - began, await rig.stored()))
                await asyncio.sleep(0.5)

        async def kill() -> None:
            await asyncio.sleep(kill_at)
            node = rig.cluster.kill(0) if rig.cluster is not None else None
            rig.kill_worker(0)
            killed.extend([f"NATS server {node.name if node else '?'}", "worker 0"])
            console.print(f"  t={kill_at:.0f}s: killed {killed[0]} and {killed[1]}")

        sampler = asyncio.create_task(sample())
        killer = asyncio.create_task(kill())
        console.print(f"posting for {seconds:.0f} s ({concurrency} requests in flight)")
        acknowledged, resent, acks = await rig.post(seconds, concurrency, items)
        await killer
        posted = time.monotonic()
        with console.status("waiting for every acknowledged reading to be stored…"):
            while await rig.stored() < acknowledged:
                if time.monotonic() - posted > catch_up_within:
                    break
                await asyncio.sleep(0.2)
        catch_up = time.monotonic() - posted
        await asyncio.sleep(1.0)  # anything written twice would show up now
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        counts = await rig.counts()
        cpu_after = rig.api_cpu_seconds()
        failed = counts["stored"] != acknowledged
    finally:
        await rig.stop(keep_logs=failed)
        if failed:
            console.print(f"[red]logs kept in {rig.root}[/]")
    bounds = [
        ("before the kill", 0.0, kill_at),
        ("during fail-over", kill_at, min(seconds, kill_at + settle)),
        ("after fail-over", min(seconds, kill_at + settle), seconds),
    ]
    return ClusterFigures(
        nats_servers=rig.cluster.size if rig.cluster else 0,
        stream_replicas=rig.settings.nats.stream_replicas,
        worker_processes=rig.workers,
        api_replicas=rig.apis,
        meters=rig.meters,
        acknowledged=acknowledged,
        stored=counts["stored"],
        counted_by_status=counts["status"],
        counted_by_windows=counts["windows"],
        resent_requests=resent,
        api_cpu_seconds=[round(a - b, 2) for a, b in zip(cpu_after, cpu_before, strict=True)],
        phases=[_phase(name, lo, hi, samples, acks) for name, lo, hi in bounds if hi > lo],
        catch_up_seconds=round(catch_up, 2),
        killed=killed,
        load_average_start=load_start,
        load_average_end=[round(x, 2) for x in os.getloadavg()],
        cpu_count=os.cpu_count() or 0,
        started_at=started_at,
    )


def _terminate(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After "pid (comm)": state is field 3, utime and stime are fields 14 and 15.
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def _at(series: list[tuple[float, int]], t: float) -> float:
    """Value of a cumulative series at time ``t`` (linear between samples)."""
    if not series:
        return 0.0
    before = [(x, y) for x, y in series if x <= t]
    after = [(x, y) for x, y in series if x > t]
    if not before:
        return 0.0
    if not after:
        return float(before[-1][1])
    (x0, y0), (x1, y1) = before[-1], after[0]
    return y0 + (y1 - y0) * (t - x0) / (x1 - x0)


def _phase(
    name: str,
    lo: float,
    hi: float,
    stored: list[tuple[float, int]],
    acknowledged: list[tuple[float, int]],
) -> Phase:
    span = hi - lo
    return Phase(
        name=name,
        seconds=round(span, 2),
        stored_per_s=round((_at(stored, hi) - _at(stored, lo)) / span),
        acknowledged_per_s=round((_at(acknowledged, hi) - _at(acknowledged, lo)) / span),
    )
