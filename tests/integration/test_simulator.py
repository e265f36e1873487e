"""The simulator's runner against a fake head-end: registration, ticks, back-pressure, lag."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import msgspec
import nats
import pytest
import uvicorn
from litestar import Litestar, Request, Response, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body
from nats.aio.msg import Msg
from rich.console import Console
from typer.testing import CliRunner

from api.auth import TokenService, Unauthenticated
from commands.context import Role, Scope
from commands.meter_csv import parse_meter_csv
from config.settings import Settings
from hes.cli import app as cli
from simulation.load_model import Fleet
from simulation.simulator import IMPORT_PATH, TELEMETRY_PATH, SimulatorError, Summary, simulate
from tests.conftest import JWT_SECRET, RUN_ID
from tests.services import Services

Received = dict[datetime, dict[str, list[tuple[str, datetime, float]]]]


@dataclass
class FakeHes:
    """The head-end's meter import and telemetry endpoints, recording what they are sent.

    The first ``pushback`` telemetry calls are answered 503; readings of meters that were
    never registered, or are listed in ``unknown``, are rejected as the real ingest does. Like a
    meters projection running behind, the first ``lagging_lookups`` GraphQL meter lookups find
    nothing, and until one finds its meter, registered meters are unknown to ingest as well.
    """

    tokens: TokenService
    pushback: int = 1
    delay_s: float = 0.0
    registered: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    imports: list[list[str]] = field(default_factory=list)
    calls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    keep_bodies: bool = True
    lagging_lookups: int = 0
    lookups: int = 0
    visible: bool = False
    pushed_back: list[bytes] = field(default_factory=list)
    accepted_bodies: list[bytes] = field(default_factory=list)

    def authorized(self, header: str | None, role: Role | None, scope: Scope | None) -> bool:
        """True when the bearer token holds ``role`` or ``scope``."""
        try:
            actor = self.tokens.from_header(header)
        except Unauthenticated:
            return False
        return (role is not None and role in actor.roles) or (
            scope is not None and scope in actor.scopes
        )

    def register(self, csv: bytes) -> dict[str, Any]:
        """The import report for a CSV file; serials seen before come back unchanged."""
        serials = [row.spec.serial for row in parse_meter_csv(csv).rows]
        self.imports.append(serials)
        created = [s for s in serials if s not in self.registered]
        self.registered.update(serials)
        return {
            "rows": len(serials),
            "created": len(created),
            "unchanged": len(serials) - len(created),
            "rejected": 0,
            "errors": [],
            "lastPosition": None,
        }

    async def ingest(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Status and answer for one telemetry body."""
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            if self.calls <= self.pushback:
                self.pushed_back.append(body)
                problem = {"title": "Service Unavailable", "status": 503, "detail": "busy"}
                return 503, problem
            items = msgspec.json.decode(body)
            accepted = rejected = 0
            errors = []
            for index, item in enumerate(items):
                known = self.visible or not self.lagging_lookups
                if known and item["meter"] in self.registered and item["meter"] not in self.unknown:
                    accepted += len(item["readings"])
                    continue
                rejected += len(item["readings"])
                errors.append(
                    {
                        "item": index,
                        "field": "meter",
                        "rule": "unknown",
                        "message": f"meter {item['meter']} is not registered",
                        "serial": item["meter"],
                    }
                )
            if self.keep_bodies:
                self.accepted_bodies.append(body)
            return 200, {"accepted": accepted, "rejected": rejected, "errors": errors}
        finally:
            self.in_flight -= 1

    def received(self) -> Received:
        """Readings of every answered body, by timestamp and meter."""
        by_ts: Received = {}
        for body in self.accepted_bodies:
            for item in msgspec.json.decode(body):
                for r in item["readings"]:
                    ts = datetime.fromisoformat(r["ts"])
                    reading = (r["obis"], ts, r["value"])
                    by_ts.setdefault(ts, {}).setdefault(item["meter"], []).append(reading)
        return by_ts

    def lookup(self, body: bytes) -> dict[str, Any]:
        """GraphQL ``meter(serial:)`` as a lagging read model answers it."""
        self.lookups += 1
        serial = msgspec.json.decode(body)["variables"]["s"]
        self.visible = self.visible or self.lookups > self.lagging_lookups
        found = self.visible and serial in self.registered
        return {"data": {"meter": {"id": serial} if found else None}}

    def app(self) -> Litestar:
        """The Litestar app serving the three endpoints."""

        @post(IMPORT_PATH, status_code=200)
        async def upload(
            request: Request[Any, Any, Any],
            data: Annotated[UploadFile, Body(media_type=RequestEncodingType.MULTI_PART)],
        ) -> Response[dict[str, Any]]:
            if not self.authorized(request.headers.get("authorization"), Role.OPERATOR, None):
                return Response({"detail": "operator role required"}, status_code=403)
            return Response(self.register(await data.read()))

        @post(TELEMETRY_PATH, status_code=200)
        async def telemetry(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
            if not self.authorized(request.headers.get("authorization"), None, Scope.INGEST):
                return Response({"detail": "ingest scope required"}, status_code=403)
            status, answer = await self.ingest(await request.body())
            return Response(answer, status_code=status)

        @post("/graphql", status_code=200)
        async def graphql(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
            if not self.authorized(request.headers.get("authorization"), Role.OPERATOR, None):
                return Response({"detail": "operator role required"}, status_code=403)
            return Response(self.lookup(await request.body()))

        return Litestar([upload, telemetry, graphql])


@contextlib.contextmanager
def serving(fake: FakeHes) -> Iterator[str]:
    """Serve ``fake`` on a free local port in a thread of its own; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(fake.app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=asyncio.run, args=(server.serve(sockets=[sock]),))
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def settings_for(tmp_path: Path, secret: str = JWT_SECRET, **kwargs: Any) -> Settings:
    """Settings whose tokens the fake accepts (or not, with another ``secret``)."""
    return Settings.of(jwt_secret=secret, data_dir=tmp_path, **kwargs)


def quiet() -> Console:
    """A console writing nowhere visible."""
    return Console(file=io.StringIO(), width=200)


def expected(meters: int, seed: int, times: list[datetime]) -> Received:
    """What the load model produces for these tick times, shaped like ``FakeHes.received``."""
    fleet = Fleet(meters, seed, 4, times[0])
    return {
        ts: {serial: list(readings) for serial, readings in fleet.tick(ts)} for ts in sorted(times)
    }


def summary_line(out: str) -> dict[str, Any]:
    """The JSON summary: the last line printed on stdout."""
    parsed: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return parsed


@pytest.fixture
def fake(tokens: TokenService) -> FakeHes:
    """A fresh fake head-end trusting the test secret."""
    return FakeHes(tokens)


async def test_registers_then_sends_each_tick_retrying_pushback(
    fake: FakeHes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serving(fake) as url:
        summary = await simulate(
            settings_for(tmp_path),
            meters=50,
            interval_s=0.5,
            via="http",
            url=url,
            seed=1,
            ticks=2,
            batch_meters=20,
            concurrency=3,
            console=quiet(),
        )
        # The fleet registered in one import call, with the operator token.
        assert len(fake.imports) == 1 and len(fake.imports[0]) == 50
        assert summary.registration.created == 50

        # 503 once, then 2 ticks of 3 batches; the pushed-back body was sent again as it was.
        assert fake.calls == summary.requests == 7
        assert summary.retries == 1
        assert fake.pushed_back[0] in fake.accepted_bodies
        assert fake.max_in_flight <= 3

        # What arrived is exactly the load model's output for those two instants.
        received = fake.received()
        times = sorted(received)
        assert len(times) == 2 and times[1] - times[0] == timedelta(seconds=0.5)
        assert received == expected(50, 1, times)
        readings = sum(len(r) for tick in received.values() for r in tick.values())
        assert summary.readings == summary.accepted == readings
        assert summary.ticks == 2 and summary.rejected == summary.failed == 0
        assert summary.readings_per_s > 0

        # The JSON summary line on stdout is the returned summary.
        assert summary_line(capsys.readouterr().out) == msgspec.to_builtins(summary)

        # A second run finds the fleet registered; a meter the server does not know is rejected.
        fake.unknown.add("SIM-1-000007")
        again = await simulate(
            settings_for(tmp_path),
            meters=50,
            interval_s=0.5,
            via="http",
            url=url,
            seed=1,
            ticks=1,
            console=quiet(),
        )
    assert again.registration.created == 0 and again.registration.unchanged == 50
    assert again.rejected > 0 and again.rejected_by_rule == {"meter/unknown": 1}
    assert again.accepted + again.rejected == again.readings


async def test_slow_server_is_reported_as_lag_not_queued(fake: FakeHes, tmp_path: Path) -> None:
    fake.pushback, fake.delay_s = 0, 0.25
    with serving(fake) as url:
        summary = await simulate(
            settings_for(tmp_path),
            meters=10,
            interval_s=0.1,
            via="http",
            url=url,
            seed=2,
            duration_s=1.0,
            batch_meters=10,
            concurrency=1,
            console=quiet(),
        )
    assert fake.max_in_flight == 1
    assert summary.overruns == summary.ticks and 2 <= summary.ticks <= 5
    assert summary.skipped_ticks >= summary.ticks - 1
    assert summary.ticks + summary.skipped_ticks == 10  # slots of 0.1 s in 1 s
    assert summary.max_tick_s >= 0.25
    times = sorted(fake.received())
    assert all(b - a >= timedelta(seconds=0.2) for a, b in itertools.pairwise(times))


async def test_readings_wait_until_the_read_model_knows_the_fleet(
    fake: FakeHes, tmp_path: Path
) -> None:
    fake.lagging_lookups = 3
    fake.pushback = 0
    with serving(fake) as url:
        summary = await simulate(
            settings_for(tmp_path),
            meters=20,
            interval_s=0.1,
            via="http",
            url=url,
            seed=2,
            ticks=1,
            console=quiet(),
        )
    assert fake.lookups == 4
    assert summary.accepted > 0 and summary.rejected == 0


async def test_foreign_secret_stops_before_any_reading(fake: FakeHes, tmp_path: Path) -> None:
    with serving(fake) as url, pytest.raises(SimulatorError, match="meter import refused: 403"):
        await simulate(
            settings_for(tmp_path, secret="another-secret-" + "y" * 40),
            meters=5,
            interval_s=0.1,
            via="http",
            url=url,
            seed=1,
            ticks=1,
            console=quiet(),
        )
    assert fake.calls == 0


async def test_unreachable_api_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SimulatorError, match="is `hes up` running"):
        await simulate(
            settings_for(tmp_path),
            meters=5,
            interval_s=0.1,
            via="http",
            url="http://127.0.0.1:9",
            seed=1,
            ticks=1,
            console=quiet(),
        )


@pytest.mark.integration
async def test_nats_transport_with_back_pressure(
    fake: FakeHes, tmp_path: Path, services: Services
) -> None:
    prefix = f"Sim{RUN_ID}"
    nc = await nats.connect(services.nats_url)
    subjects: list[str] = []

    async def respond(msg: Msg) -> None:
        subjects.append(msg.subject)
        status, answer = await fake.ingest(msg.data)
        if status != 200:
            answer = {"code": "BACK_PRESSURE", **answer}
        await msg.respond(msgspec.json.encode(answer))

    await nc.subscribe(f"{prefix.lower()}.hes.ingest.>", cb=respond)
    try:
        with serving(fake) as url:
            summary: Summary = await simulate(
                settings_for(tmp_path, nats_url=services.nats_url, nats_prefix=prefix),
                meters=30,
                interval_s=0.2,
                via="nats",
                url=url,
                seed=3,
                ticks=2,
                batch_meters=10,
                concurrency=2,
                console=quiet(),
            )
    finally:
        await nc.close()
    assert set(subjects) == {f"{prefix.lower()}.hes.ingest.sim-3"}
    assert summary.target == f"nats {prefix.lower()}.hes.ingest.sim-3"
    assert summary.retries == 1 and len(subjects) == summary.requests == 7
    received = fake.received()
    assert received == expected(30, 3, sorted(received))
    assert summary.accepted == summary.readings > 0


def test_cli_simulate_prints_the_summary(fake: FakeHes, tmp_path: Path) -> None:
    env = {"HES_JWT_SECRET": JWT_SECRET, "HES_DATA_DIR": str(tmp_path)}
    with serving(fake) as url:
        args = ["simulate", "--meters", "20", "--interval", "200ms", "--duration", "0.4s"]
        args += ["--url", url, "--seed", "4", "--batch-meters", "8", "--concurrency", "2"]
        result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    summary = summary_line(result.stdout)
    assert summary["meters"] == 20 and summary["seed"] == 4 and summary["interval_s"] == 0.2
    assert 1 <= summary["ticks"] <= 2 and summary["accepted"] == summary["readings"] > 0
    assert summary["elapsed_s"] >= 0.35  # the run lasts its duration
    assert summary["registration"] == {"rows": 20, "created": 20, "unchanged": 0}

    bad = CliRunner().invoke(cli, ["simulate", "--interval", "ten seconds"], env=env)
    assert bad.exit_code == 2 and "not a duration" in bad.output


async def test_backfill_sends_past_slots_back_to_back_then_goes_live(
    fake: FakeHes, tmp_path: Path
) -> None:
    with serving(fake) as url:
        started = datetime.now(UTC)
        summary = await simulate(
            settings_for(tmp_path),
            meters=5,
            interval_s=60.0,
            via="http",
            url=url,
            seed=3,
            ticks=4,
            console=quiet(),
            backfill_s=180.0,
        )
    times = sorted(fake.received())
    # Three past minutes, then the current one: consecutive slots, sent without waiting.
    assert len(times) == 4 and summary.ticks == 4
    assert [b - a for a, b in itertools.pairwise(times)] == [timedelta(minutes=1)] * 3
    assert times[-1] <= started < times[-1] + timedelta(minutes=1)
    assert datetime.now(UTC) - started < timedelta(seconds=30)
