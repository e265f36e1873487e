"""`hes up` as a user runs it: a real process serving GraphQL over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.services import Services

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
REGISTER = """
mutation($serial: String!) {
  registerMeter(input: {serial: $serial, manufacturer: "Kamstrup", model: "Omnipower",
    firmware: "3.1", phases: 3, region: "West", area: "W-2",
    connection: {host: "127.20.30.40", port: 4059, transport: WRAPPER}}) {
    __typename ... on Meter { id serial status }
  }
}
"""


def _drop(services: Services, schema: str) -> None:
    import asyncio

    import nats

    from adapters.nats.streams import delete_streams

    async def streams() -> None:
        nc = await nats.connect(services.nats_url)
        await delete_streams(nc.jetstream(), schema.upper() + "_")
        await nc.close()

    asyncio.run(streams())
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen[bytes], base: str, log: Path, seconds: float = 60) -> None:
    """Wait until the `hes up` at ``base`` is ready; fail with its log if it dies or is late."""
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def _hes(env: dict[str, str], *args: str) -> list[str]:
    return [sys.executable, "-m", "hes.cli", *args]


def _run_up_and_use_it(
    env: dict[str, str], also: Callable[[dict[str, str], str], None] | None = None
) -> None:
    """Start `hes up`, register and list a meter over HTTP, then run ``also(env, serial)``."""
    port = int(env["HES_PORT"])
    base = f"http://127.0.0.1:{port}"
    log = Path(env["HES_DATA_DIR"]) / "up.log"
    Path(env["HES_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(_hes(env, "up"), env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, base, log)

        token = subprocess.run(
            _hes(env, "token", "--role", "operator", "--subject", "e2e"),
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        serial = f"E2E{uuid.uuid4().hex[:10].upper()}"
        registered = httpx.post(
            f"{base}/graphql",
            headers=headers,
            timeout=10,
            json={"query": REGISTER, "variables": {"serial": serial}},
        ).json()
        assert registered["data"]["registerMeter"]["__typename"] == "Meter", registered
        listed = httpx.post(
            f"{base}/graphql",
            headers=headers,
            timeout=10,
            json={
                "query": '{ meters(filter: {region: "West"}) { edges { node { serial status } } } }'
            },
        ).json()
        assert {"serial": serial, "status": "REGISTERED"} in [
            e["node"] for e in listed["data"]["meters"]["edges"]
        ]
        assert httpx.get(f"{base}/graphql", headers={"Accept": "text/html"}).status_code == 200
        assert httpx.get(f"{base}/schema/openapi.json").status_code == 200
        banner = log.read_text()
        assert f"GraphQL    {base}/graphql" in banner
        if also is not None:
            also(env, serial)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode in (0, 130, -signal.SIGINT), log.read_text()


def configured_env(services: Services, tmp_path: Path, prefix: str = "e") -> dict[str, str]:
    """Environment of a `hes up` on the run's servers, with a schema and free ports of its own."""
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HES_DATABASE_URL": services.database_url,
        "HES_NATS_URL": services.nats_url,
        "HES_DB_SCHEMA": schema,
        "HES_NATS_PREFIX": schema.upper() + "_",
        "HES_PORT": str(_free_port()),
        "HES_DLMS_PUSH_PORT": str(_free_port()),
        "HES_DATA_DIR": str(tmp_path / "data"),
        "HES_LOG_LEVEL": "WARNING",
    }


def test_up_with_configured_servers(services: Services, tmp_path: Path) -> None:
    env = configured_env(services, tmp_path)
    schema = env["HES_DB_SCHEMA"]
    try:
        _run_up_and_use_it(env)
    finally:
        _drop(services, schema)


def _commands_attach_to_the_embedded_servers(env: dict[str, str], serial: str) -> None:
    """`hes events tail` (which never starts servers) finds the embedded NATS of `hes up`."""
    tail = subprocess.run(
        _hes(env, "events", "tail", "--filter", "meter.Registered", "--limit", "1"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tail.returncode == 0, tail.stderr
    event = json.loads(tail.stdout.splitlines()[0])
    # v2 since a connection's client address may be null (the meter's DLMS profile gives it)
    assert event["type"] == "hes.meter.Registered.v2" and event["data"]["spec"]["serial"] == serial


def test_up_with_nothing_but_python(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HES_")}
    env.update(
        PYTHONPATH=str(ROOT),
        HES_PORT=str(_free_port()),
        HES_DLMS_PUSH_PORT=str(_free_port()),
        HES_DATA_DIR=str(tmp_path / "hes-data"),
        HES_LOG_LEVEL="WARNING",
    )
    _run_up_and_use_it(env, also=_commands_attach_to_the_embedded_servers)
    assert (tmp_path / "hes-data" / "jwt-secret").stat().st_mode & 0o077 == 0
    # Everything it started has stopped with it.
    pg_pid = tmp_path / "hes-data" / "postgres" / "postmaster.pid"
    deadline = time.monotonic() + 10
    while pg_pid.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pg_pid.exists()


LIVE = (
    "subscription($m: String!) { liveReadings(meter: $m) "
    "{ meterId ts value quantity { alias } source } }"
)


def test_telemetry_flows_live_and_into_queries(services: Services, tmp_path: Path) -> None:
    """Gateway POST → live websocket subscribers and the stored readings, in one `hes up`."""
    import asyncio
    import json
    from datetime import UTC, datetime, timedelta

    import websockets
    from websockets.typing import Subprotocol

    schema = f"l_{uuid.uuid4().hex[:8]}"
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HES_DATABASE_URL": services.database_url,
        "HES_NATS_URL": services.nats_url,
        "HES_DB_SCHEMA": schema,
        "HES_NATS_PREFIX": schema.upper() + "_",
        "HES_PORT": str(port),
        "HES_DLMS_PUSH_PORT": str(_free_port()),
        "HES_DATA_DIR": str(tmp_path / "data"),
        "HES_LOG_LEVEL": "WARNING",
    }
    base = f"http://127.0.0.1:{port}"
    Path(env["HES_DATA_DIR"]).mkdir(parents=True)
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(_hes(env, "up"), env=env, stdout=out, stderr=subprocess.STDOUT)

    def token(*args: str) -> str:
        return subprocess.run(
            _hes(env, "token", *args), env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    async def scenario() -> None:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            while True:
                assert proc.poll() is None, log.read_text()
                try:
                    if (await client.get("/health/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)
            operator = {"Authorization": f"Bearer {token('--role', 'operator')}"}
            serial = f"LIVE{uuid.uuid4().hex[:8].upper()}"
            registered = await client.post(
                "/graphql",
                headers=operator,
                json={"query": REGISTER, "variables": {"serial": serial}},
            )
            assert registered.json()["data"]["registerMeter"]["__typename"] == "Meter"

            async with websockets.connect(
                f"ws://127.0.0.1:{port}/graphql",
                subprotocols=[Subprotocol("graphql-transport-ws")],
                additional_headers=operator,
            ) as ws:
                await ws.send(json.dumps({"type": "connection_init"}))
                assert json.loads(await ws.recv())["type"] == "connection_ack"
                await ws.send(
                    json.dumps(
                        {
                            "id": "1",
                            "type": "subscribe",
                            "payload": {"query": LIVE, "variables": {"m": serial}},
                        }
                    )
                )
                await asyncio.sleep(0.5)  # the subscription is bound before readings flow
                ts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
                gateway = {"Authorization": f"Bearer {token('--scope', 'ingest')}"}
                posted = await client.post(
                    "/telemetry/batch",
                    headers=gateway,
                    json=[
                        {
                            "meter_id": serial,
                            "timestamp": ts.isoformat(),
                            "voltage": 229.0,
                            "power_kw": 1.5,
                        }
                    ],
                )
                assert posted.json()["accepted"] == 2, posted.text
                live: list[dict[str, Any]] = []
                while len(live) < 2:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    assert msg["type"] == "next", msg
                    live.append(msg["payload"]["data"]["liveReadings"])
                assert {(r["quantity"]["alias"], r["value"]) for r in live} == {
                    ("voltage_l1", 229.0),
                    ("power_import", 1500.0),
                }
                assert {r["source"] for r in live} == {"http"}

            query = (
                "query($m: String!, $f: DateTime!, $t: DateTime!) { readings(meter: $m, "
                'quantity: "voltage_l1", from: $f, to: $t) { edges { node { value } } } }'
            )
            variables = {
                "m": serial,
                "f": (ts - timedelta(minutes=1)).isoformat(),
                "t": (ts + timedelta(minutes=1)).isoformat(),
            }
            while True:
                stored = (
                    await client.post(
                        "/graphql", headers=operator, json={"query": query, "variables": variables}
                    )
                ).json()
                if stored["data"]["readings"]["edges"]:
                    break
                assert time.monotonic() < deadline + 30, stored
                await asyncio.sleep(0.2)
            assert stored["data"]["readings"]["edges"][0]["node"]["value"] == 229.0
            metrics = (await client.get("/metrics")).text
            assert 'hes_readings_accepted_total{source="http"} 2.0' in metrics
            # Counted in the reading-worker child process, shown by the API's /metrics:
            assert "hes_readings_stored_total 2.0" in metrics
            assert "hes_reading_latency_ingest_seconds_count 1.0" in metrics

    try:
        asyncio.run(scenario())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        _drop(services, schema)
