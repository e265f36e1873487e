"""`hes up` as a user runs it: a real process serving GraphQL over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

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
    connection: {host: "10.20.30.40", port: 4059, transport: WRAPPER}}) {
    __typename ... on Meter { id serial status }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hes(env: dict[str, str], *args: str) -> list[str]:
    return [sys.executable, "-m", "hes.cli", *args]


def _run_up_and_use_it(env: dict[str, str]) -> None:
    port = int(env["HES_PORT"])
    base = f"http://127.0.0.1:{port}"
    log = Path(env["HES_DATA_DIR"]) / "up.log"
    Path(env["HES_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(_hes(env, "up"), env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

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
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode in (0, 130, -signal.SIGINT), log.read_text()


def test_up_with_configured_servers(services: Services, tmp_path: Path) -> None:
    schema = f"e_{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HES_DATABASE_URL": services.database_url,
        "HES_NATS_URL": services.nats_url,
        "HES_DB_SCHEMA": schema,
        "HES_NATS_PREFIX": schema.upper() + "_",
        "HES_PORT": str(_free_port()),
        "HES_DATA_DIR": str(tmp_path / "data"),
        "HES_LOG_LEVEL": "WARNING",
    }
    try:
        _run_up_and_use_it(env)
    finally:
        with psycopg.connect(services.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_up_with_nothing_but_python(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HES_")}
    env.update(
        PYTHONPATH=str(ROOT),
        HES_PORT=str(_free_port()),
        HES_DATA_DIR=str(tmp_path / "hes-data"),
        HES_LOG_LEVEL="WARNING",
    )
    _run_up_and_use_it(env)
    assert (tmp_path / "hes-data" / "jwt-secret").stat().st_mode & 0o077 == 0
    # Everything it started has stopped with it.
    pg_pid = tmp_path / "hes-data" / "postgres" / "postmaster.pid"
    deadline = time.monotonic() + 10
    while pg_pid.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pg_pid.exists()
