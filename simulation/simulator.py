"""``hes simulate``: register a simulated fleet, then send its readings every interval."""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

import httpx
import msgspec
import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from commands.context import Role, Scope
from commands.meter_import import ImportReport
from config.settings import Settings
from simulation.load_model import Fleet, Injection, MeterReadings

Via = Literal["http", "nats"]

TELEMETRY_PATH = "/api/v1/telemetry/batch"
IMPORT_PATH = "/api/v1/imports/meters"
GRAPHQL_PATH = "/graphql"
VISIBLE_TIMEOUT_S = 300.0
"""How long registration waits for the meters read model to show the whole fleet."""
REGISTER_CHUNK = 5_000
"""Meters per import request (the import endpoint takes at most 100,000 rows per file)."""
RETRY_BUDGET_S = 60.0
"""How long one batch is retried under back-pressure before its readings count as failed."""
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
TOKEN_TTL_S = 12 * 3600
TOKEN_RENEW_S = 3600.0
NATS_REQUEST_TIMEOUT_S = 30.0
NATS_CONNECT_TIMEOUT_S = 10.0

_DURATION = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>ms|s|m|h)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class SimulatorError(Exception):
    """The run cannot go on: unreachable server, refused credentials, bad parameters."""


def parse_duration(text: str) -> float:
    """Seconds in ``500ms``, ``10s``, ``2m`` or ``1h`` (a bare number is seconds)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 500ms, 10s, 2m or 1h")
    seconds = float(match["number"]) * _UNIT_S[match["unit"] or "s"]
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return seconds


class ItemError(msgspec.Struct, frozen=True):
    """One rejected reading as the ingest answer describes it."""

    item: int = -1
    field: str = ""
    rule: str = ""
    message: str = ""
    serial: str | None = None


class IngestAnswer(msgspec.Struct, frozen=True):
    """The ingest endpoint's answer to one batch."""

    accepted: int
    rejected: int
    errors: list[ItemError] = []


class Registration(msgspec.Struct, frozen=True, kw_only=True):
    """What registering the fleet through the meter import did."""

    rows: int
    created: int
    unchanged: int


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a run, printed as one JSON line on stdout."""

    via: str
    target: str
    meters: int
    regions: int
    seed: int
    interval_s: float
    registration: Registration
    ticks: int
    skipped_ticks: int
    """Interval slots left out because the previous tick was still running."""
    overruns: int
    """Ticks that took longer than the interval."""
    max_tick_s: float
    """Longest time a tick took to send; above ``interval_s`` the fleet cannot keep up."""
    readings: int
    accepted: int
    rejected: int
    failed: int
    """Readings in batches that got no answer (gave up retrying, or refused as a whole)."""
    retries: int
    requests: int
    elapsed_s: float
    readings_per_s: float
    """Answered (accepted + rejected) readings per second of the run."""
    rejected_by_rule: dict[str, int]
    problems: list[str]
    interrupted: bool


class _Retry(NamedTuple):
    reason: str
    after: float | None


class _Failed(NamedTuple):
    reason: str


_Outcome = IngestAnswer | _Retry | _Failed


class _Sender(Protocol):
    target: str

    async def send(self, body: bytes) -> _Outcome: ...


class _Credentials:
    """Bearer tokens minted locally with the server's secret, renewed before they expire."""

    def __init__(self, settings: Settings) -> None:
        # Imported here: the runtime module pulls in the whole API application.
        from bootstrap.runtime import token_service

        self._tokens = token_service(settings)
        self._cache: dict[str, tuple[float, str]] = {}

    def header(self, kind: Literal["operator", "ingest"]) -> str:
        """``Bearer …`` with the operator role, or with the ingest scope."""
        minted = self._cache.get(kind)
        if minted is None or time.monotonic() - minted[0] > TOKEN_RENEW_S:
            roles = [Role.OPERATOR] if kind == "operator" else []
            scopes = [Scope.INGEST] if kind == "ingest" else []
            token = self._tokens.issue(
                "hes-simulator", roles, scopes=scopes, ttl_seconds=TOKEN_TTL_S
            )
            minted = (time.monotonic(), f"Bearer {token}")
            self._cache[kind] = minted
        return minted[1]


class _HttpSender:
    def __init__(self, client: httpx.AsyncClient, credentials: _Credentials) -> None:
        self._client = client
        self._credentials = credentials
        self.target = f"{client.base_url}".rstrip("/") + TELEMETRY_PATH

    async def send(self, body: bytes) -> _Outcome:
        headers = {
            "Authorization": self._credentials.header("ingest"),
            "Content-Type": "application/json",
        }
        try:
            response = await self._client.post(TELEMETRY_PATH, content=body, headers=headers)
        except httpx.TransportError as exc:
            return _Retry(f"{type(exc).__name__}: {exc}", None)
        status = response.status_code
        if status == 200:
            return _answer(response.content)
        detail = f"{status} {_detail(response.content)}"
        if status in RETRYABLE_STATUS:
            return _Retry(detail, _retry_after(response.headers.get("retry-after")))
        if status in (401, 403):
            raise SimulatorError(
                f"telemetry refused: {detail} (does the server use this HES_JWT_SECRET "
                "or HES_DATA_DIR?)"
            )
        return _Failed(detail)


class _NatsSender:
    def __init__(self, nc: NatsClient, subject: str) -> None:
        self._nc = nc
        self.target = f"nats {subject}"
        self._subject = subject

    async def send(self, body: bytes) -> _Outcome:
        if len(body) > self._nc.max_payload:
            raise SimulatorError(
                f"a batch of {len(body)} bytes exceeds the NATS max payload of "
                f"{self._nc.max_payload}; lower --batch-meters"
            )
        try:
            msg = await self._nc.request(self._subject, body, timeout=NATS_REQUEST_TIMEOUT_S)
        except nats.errors.NoRespondersError:
            return _Retry(f"no ingest listener on {self._subject}", None)
        except (nats.errors.TimeoutError, nats.errors.ConnectionReconnectingError) as exc:
            return _Retry(f"{type(exc).__name__}: {exc}", None)
        try:
            reply = msgspec.json.decode(msg.data)
        except msgspec.DecodeError:
            return _Failed(f"unreadable reply: {msg.data[:200]!r}")
        if isinstance(reply, dict) and "accepted" in reply:
            return _answer(msg.data)
        status = reply.get("status") if isinstance(reply, dict) else None
        detail = _detail(msg.data)
        if status in RETRYABLE_STATUS:
            return _Retry(f"{status} {detail}", None)
        return _Failed(f"{status or 'error'} {detail}")


def _answer(content: bytes) -> _Outcome:
    try:
        return msgspec.json.decode(content, type=IngestAnswer)
    except msgspec.DecodeError as exc:
        return _Failed(f"unreadable answer ({exc}): {content[:200]!r}")


def _detail(content: bytes) -> str:
    """The human part of a problem+json (or ``{"error": …}``) body, else the body's start."""
    try:
        problem = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return content[:200].decode(errors="replace")
    if isinstance(problem, dict):
        for key in ("detail", "error", "title"):
            if isinstance(problem.get(key), str):
                return str(problem[key])
    return content[:200].decode(errors="replace")


def _retry_after(header: str | None) -> float | None:
    try:
        return min(30.0, max(0.0, float(header))) if header else None
    except ValueError:
        return None


@dataclass
class _Stats:
    ticks: int = 0
    skipped_ticks: int = 0
    overruns: int = 0
    max_tick_s: float = 0.0
    last_tick_s: float = 0.0
    readings: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    retries: int = 0
    requests: int = 0
    started: float | None = None
    rules: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def elapsed(self) -> float:
        """Seconds since the first tick started."""
        return 0.0 if self.started is None else time.monotonic() - self.started

    def rate(self) -> float:
        """Answered readings per second so far."""
        elapsed = self.elapsed()
        return (self.accepted + self.rejected) / elapsed if elapsed > 0 else 0.0

    def note(self, problem: str) -> None:
        """Remember a distinct problem (the first few) for the summary."""
        if problem not in self.problems and len(self.problems) < 5:
            self.problems.append(problem)


class _Run:
    def __init__(
        self,
        fleet: Fleet,
        *,
        interval_s: float,
        duration_s: float | None,
        ticks: int | None,
        batch_meters: int,
        concurrency: int,
        console: Console,
        backfill_ticks: int = 0,
    ) -> None:
        self.fleet = fleet
        self.backfill_ticks = backfill_ticks
        self.interval_s = interval_s
        self.duration_s = duration_s
        self.max_ticks = ticks
        self.batch_meters = batch_meters
        self.concurrency = concurrency
        self.console = console
        self.stats = _Stats()
        self._encoder = msgspec.json.Encoder()
        self._jitter = random.Random()
        self._warned = False

    async def register(self, client: httpx.AsyncClient, credentials: _Credentials) -> Registration:
        """Import the fleet's meters (idempotent: known meters come back unchanged)."""
        created = unchanged = 0
        total = len(self.fleet)
        with self.console.status(f"registering {total} simulated meters…") as status:
            for first in range(0, total, REGISTER_CHUNK):
                body = self.fleet.csv(first, REGISTER_CHUNK).encode()
                try:
                    response = await client.post(
                        IMPORT_PATH,
                        files={"data": ("simulated-meters.csv", body, "text/csv")},
                        headers={"Authorization": credentials.header("operator")},
                        timeout=httpx.Timeout(600.0, connect=10.0),
                    )
                except httpx.TransportError as exc:
                    raise SimulatorError(
                        f"cannot reach {client.base_url} ({type(exc).__name__}: {exc}); "
                        "is `hes up` running?"
                    ) from exc
                if response.status_code != 200:
                    raise SimulatorError(
                        f"meter import refused: {response.status_code} {_detail(response.content)}"
                    )
                try:
                    report = msgspec.json.decode(response.content, type=ImportReport)
                except msgspec.DecodeError as exc:
                    raise SimulatorError(f"unexpected meter import answer: {exc}") from exc
                if report.errors:
                    e = report.errors[0]
                    meter = e.serial or f"meter #{first + e.line - 1}"
                    raise SimulatorError(
                        f"the API rejected {report.rejected} simulated meters, e.g. "
                        f"{meter} {e.field}: {e.reason}"
                    )
                created += report.created
                unchanged += report.unchanged
                status.update(
                    f"registering {total} simulated meters… "
                    f"created {created}, unchanged {unchanged}"
                )
        if total:
            await self._wait_until_visible(client, credentials, self.fleet.serials()[-1])
        self.console.print(
            f"[green]✓[/] {total} simulated meters registered: "
            f"created {created}, unchanged {unchanged}"
        )
        return Registration(rows=total, created=created, unchanged=unchanged)

    async def _wait_until_visible(
        self, client: httpx.AsyncClient, credentials: _Credentials, last_serial: str
    ) -> None:
        """Wait until ingest knows the fleet, or its first readings are refused as unknown.

        The meters projection applies events in order, so the last meter registered being in
        the read model means every one is.
        """
        query = {
            "query": "query($s: String) { meter(serial: $s) { id } }",
            "variables": {"s": last_serial},
        }
        deadline = time.monotonic() + VISIBLE_TIMEOUT_S
        with self.console.status("waiting for the meters read model…"):
            while True:
                response = await client.post(
                    GRAPHQL_PATH,
                    json=query,
                    headers={"Authorization": credentials.header("operator")},
                )
                if response.status_code == 200:
                    data = msgspec.json.decode(response.content).get("data") or {}
                    if data.get("meter") is not None:
                        return
                if time.monotonic() > deadline:
                    raise SimulatorError(
                        f"the simulated meters are not in the meters read model after "
                        f"{VISIBLE_TIMEOUT_S:.0f} s (is the meters projection running? "
                        "see `hes projections status`)"
                    )
                await asyncio.sleep(0.5)

    async def loop(self, sender: _Sender) -> None:
        """Send one tick per interval slot until the duration or tick count is reached.

        The first tick goes at once, stamped with the slot it falls in; ``duration_s`` gives
        ``duration_s / interval_s`` ticks and the run lasts that long.
        """
        interval = self.interval_s
        wall0, mono0 = time.time(), time.monotonic()
        live = math.floor(wall0 / interval)
        slot = live - self.backfill_ticks  # past slots go first, back to back
        end, finish = math.inf, mono0
        if self.duration_s is not None:
            end = live + math.ceil(self.duration_s / interval - 1e-9)
            finish = mono0 + self.duration_s
        previous: int | None = None
        while True:
            if previous is not None:
                self.stats.skipped_ticks += int(min(slot, end)) - previous - 1
            if self.max_ticks is not None and self.stats.ticks >= self.max_ticks:
                return
            if slot >= end:
                # Sit out the last interval too: the achieved rate is then per second of run.
                await asyncio.sleep(max(0.0, finish - time.monotonic()))
                return
            due = mono0 + slot * interval - wall0
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            began = time.monotonic()
            if self.stats.started is None:
                self.stats.started = began
            await self.tick(sender, datetime.fromtimestamp(slot * interval, UTC))
            took = time.monotonic() - began
            self.stats.ticks += 1
            self.stats.last_tick_s = took
            self.stats.max_tick_s = max(self.stats.max_tick_s, took)
            if took > interval:
                self.stats.overruns += 1
                self._warn_overrun(took)
            # Never queue ticks up: go on with the slot we are in now, skipping those past.
            previous = slot
            current = math.floor((wall0 + time.monotonic() - mono0) / interval)
            slot = slot + 1 if slot + 1 < live else max(slot + 1, current)

    def _warn_overrun(self, took: float) -> None:
        if not self._warned:
            self._warned = True
            self.console.print(
                f"[yellow]a tick took {took:.2f} s, longer than the {self.interval_s:g} s "
                "interval: late slots are skipped, not queued (fewer --meters, more "
                "--concurrency or a longer --interval keep up)[/]"
            )

    async def tick(self, sender: _Sender, ts: datetime) -> None:
        """Send every meter's readings at ``ts``, ``concurrency`` requests at a time."""
        meters = self.fleet.iter_tick(ts)

        async def worker() -> None:
            while chunk := list(islice(meters, self.batch_meters)):
                body, count = self._encode(chunk)
                self.stats.readings += count
                await self._deliver(sender, body, count)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self.concurrency):
                    group.create_task(worker())
        except* SimulatorError as errors:
            raise errors.exceptions[0] from None

    def _encode(self, chunk: list[MeterReadings]) -> tuple[bytes, int]:
        count = 0
        items = []
        for serial, readings in chunk:
            count += len(readings)
            items.append(
                {
                    "meter": serial,
                    "readings": [{"obis": o, "ts": ts, "value": v} for o, ts, v in readings],
                }
            )
        return self._encoder.encode(items), count

    async def _deliver(self, sender: _Sender, body: bytes, count: int) -> None:
        """Send one batch; retry the same body with backoff while the server pushes back."""
        deadline = time.monotonic() + RETRY_BUDGET_S
        backoff = 0.05
        while True:
            self.stats.requests += 1
            outcome = await sender.send(body)
            if isinstance(outcome, IngestAnswer):
                self.stats.accepted += outcome.accepted
                self.stats.rejected += outcome.rejected
                self.stats.rules.update(f"{e.field}/{e.rule}" for e in outcome.errors)
                return
            self.stats.note(outcome.reason)
            if isinstance(outcome, _Failed) or time.monotonic() + backoff > deadline:
                self.stats.failed += count
                return
            self.stats.retries += 1
            pause = outcome.after
            if pause is None:
                pause = backoff * (0.5 + self._jitter.random())
            await asyncio.sleep(pause)
            backoff = min(backoff * 2, 5.0)

    def total_ticks(self) -> int | None:
        """Interval slots the run will cover (backfill included); None when it runs until Ctrl-C.

        Without an end, the backfill alone has a known length, shown until it is done.
        """
        if self.duration_s is not None:
            return self.backfill_ticks + math.ceil(self.duration_s / self.interval_s - 1e-9)
        if self.max_ticks is not None:
            return self.max_ticks
        if self.backfill_ticks and self.stats.ticks < self.backfill_ticks:
            return self.backfill_ticks
        return None

    def status(self) -> RenderableType:
        """The live display: a bar over the run's slots when it has an end, and the figures."""
        total = self.total_ticks()
        if total is None:
            return self.line()
        done = min(self.stats.ticks + self.stats.skipped_ticks, total)
        grid = Table.grid(padding=(0, 1))
        grid.add_row(
            ProgressBar(total=total, completed=done, width=30), f"{done}/{total}", self.line()
        )
        return grid

    def line(self) -> Text:
        """The live progress line."""
        s = self.stats
        text = Text.assemble(
            ("simulating ", "bold"),
            f"tick {s.ticks}  readings {s.readings:,}  ",
            ("accepted ", "green"),
            f"{s.accepted:,}  ",
            ("rejected ", "red" if s.rejected else ""),
            f"{s.rejected:,}  retries {s.retries:,}  ",
            (f"{s.rate():,.0f} readings/s", "bold cyan"),
        )
        if s.failed:
            text.append(f"  failed {s.failed:,}", style="red")
        if s.last_tick_s > self.interval_s:
            text.append(
                f"  lagging: tick took {s.last_tick_s:.2f}s > {self.interval_s:g}s interval, "
                f"{s.skipped_ticks} slots skipped",
                style="yellow",
            )
        return text

    def summary(
        self, via: Via, target: str, registration: Registration, *, interrupted: bool
    ) -> Summary:
        """The run's outcome so far."""
        s = self.stats
        return Summary(
            via=via,
            target=target,
            meters=len(self.fleet),
            regions=len(self.fleet.regions),
            seed=self.fleet.seed,
            interval_s=self.interval_s,
            registration=registration,
            ticks=s.ticks,
            skipped_ticks=s.skipped_ticks,
            overruns=s.overruns,
            max_tick_s=round(s.max_tick_s, 3),
            readings=s.readings,
            accepted=s.accepted,
            rejected=s.rejected,
            failed=s.failed,
            retries=s.retries,
            requests=s.requests,
            elapsed_s=round(s.elapsed(), 3),
            readings_per_s=round(s.rate(), 1),
            rejected_by_rule=dict(s.rules.most_common()),
            problems=list(s.problems),
            interrupted=interrupted,
        )


def nats_url(settings: Settings) -> str:
    """The configured NATS URL, else the embedded server's that ``hes up`` started."""
    if settings.nats.url:
        return settings.nats.url
    from bootstrap.embedded import running_nats

    server = running_nats(settings.runtime.data_dir)
    if server is not None:
        return server.url
    raise SimulatorError(
        "--via nats needs HES_NATS_URL, or the embedded NATS of `hes up` under HES_DATA_DIR"
    )


def ingest_subject(settings: Settings, gateway: str) -> str:
    """``[prefix.]hes.ingest.<gateway>``, the subject a gateway sends reading batches to."""
    prefix = f"{settings.nats.prefix.lower()}." if settings.nats.prefix else ""
    return f"{prefix}hes.ingest.{gateway}"


async def simulate(
    settings: Settings,
    *,
    meters: int,
    interval_s: float,
    via: Via,
    url: str,
    seed: int,
    duration_s: float | None = None,
    batch_meters: int = 200,
    concurrency: int = 8,
    console: Console,
    ticks: int | None = None,
    regions: int = 4,
    backfill_s: float = 0.0,
    inject: dict[str, float] | None = None,
    labels: Path | None = None,
) -> Summary:
    """Register ``meters`` simulated meters, then send a tick of readings every interval.

    With ``backfill_s`` the ticks of that much past time go first, as fast as the API takes them.
    ``inject`` gives the shares of meters with a labelled case (``theft``, ``stuck``,
    ``failing_phase``), starting between the middle of the backfill and now; ``labels`` is
    where the truth is written (CSV: serial, case, since, metered).

    Stops after ``duration_s`` (or ``ticks`` ticks), else runs until cancelled; prints the
    JSON summary on stdout in both cases and returns it.
    """
    if via not in ("http", "nats"):
        raise SimulatorError(f"via must be http or nats, got {via!r}")
    for name, value in (("meters", meters), ("batch_meters", batch_meters)):
        if value < 1:
            raise SimulatorError(f"{name} must be at least 1, got {value}")
    if concurrency < 1:
        raise SimulatorError(f"concurrency must be at least 1, got {concurrency}")
    if interval_s <= 0 or (duration_s is not None and duration_s <= 0):
        raise SimulatorError("interval and duration must be positive")
    if backfill_s < 0:
        raise SimulatorError("backfill must not be negative")
    backfill_ticks = math.ceil(backfill_s / interval_s - 1e-9)
    first_slot = math.floor(time.time() / interval_s) - backfill_ticks
    start = datetime.fromtimestamp(first_slot * interval_s, UTC)
    injection = None
    if inject:
        unknown = sorted(set(inject) - {"theft", "stuck", "failing_phase"})
        if unknown or any(not 0 <= v <= 1 for v in inject.values()):
            raise SimulatorError(
                f"inject: shares of theft, stuck, failing_phase in 0..1, got {inject}"
            )
        now = datetime.fromtimestamp((first_slot + backfill_ticks) * interval_s, UTC)
        injection = Injection(first=start + (now - start) / 2, last=now, **inject)
    fleet = Fleet(meters, seed, regions, start, injection=injection)
    if labels is not None:
        rows = ["serial,case,since,metered"]
        rows += [f"{x.serial},{x.case},{x.since.isoformat()},{x.metered}" for x in fleet.labels()]
        await asyncio.to_thread(labels.write_text, "\n".join(rows) + "\n")
    run = _Run(
        fleet,
        backfill_ticks=backfill_ticks,
        interval_s=interval_s,
        duration_s=duration_s,
        ticks=ticks,
        batch_meters=batch_meters,
        concurrency=concurrency,
        console=console,
    )
    credentials = _Credentials(settings)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(60.0, connect=10.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        registration = await run.register(client, credentials)
        nc: NatsClient | None = None
        sender: _Sender
        if via == "nats":
            nc = await _connect_nats(nats_url(settings), run.stats.note)
            sender = _NatsSender(nc, ingest_subject(settings, f"sim-{seed}"))
        else:
            sender = _HttpSender(client, credentials)
        try:
            with Live(console=console, get_renderable=run.status, refresh_per_second=4):
                await run.loop(sender)
        except asyncio.CancelledError:
            _print(run.summary(via, sender.target, registration, interrupted=True))
            raise
        finally:
            if nc is not None:
                await nc.close()
    summary = run.summary(via, sender.target, registration, interrupted=False)
    _print(summary)
    return summary


async def _connect_nats(url: str, note: Callable[[str], None]) -> NatsClient:
    """A client that reconnects for ever once connected; the first connect must succeed."""
    last: list[str] = []

    async def on_error(exc: Exception) -> None:
        last[:] = [f"{type(exc).__name__}: {exc}"]
        note(f"NATS {last[0]}")

    try:
        return await asyncio.wait_for(
            nats.connect(url, error_cb=on_error, max_reconnect_attempts=-1, connect_timeout=5),
            NATS_CONNECT_TIMEOUT_S,
        )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        why = last[0] if last else f"{type(exc).__name__}: {exc}"
        raise SimulatorError(f"cannot connect to NATS at {url}: {why}") from exc


def _print(summary: Summary) -> None:
    print(msgspec.json.encode(summary).decode(), flush=True)
