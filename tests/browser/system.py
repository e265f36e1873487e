"""A running HES for the browser tests: `hes up` as a user starts it, in its own schema and
stream prefix, plus tokens and GraphQL calls to prepare what a test needs."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
from psycopg import sql

from adapters.nats.streams import delete_streams
from api.auth import TokenService
from bootstrap.embedded import spawn_child
from commands.context import Role, Scope

ROOT = Path(__file__).resolve().parents[2]
JWT_SECRET = "browser-test-secret-" + "y" * 40


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RunningSystem:
    """``hes up`` in a child process; ``stop`` ends it and drops its schema and streams."""

    def __init__(self, database_url: str, nats_url: str, data_dir: Path, **env: str) -> None:
        run = uuid.uuid4().hex[:8]
        self.schema = f"b_{run}"
        self.prefix = f"B{run}_"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.nats_url = nats_url
        self.data_dir = data_dir
        self.log = data_dir / "up.log"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HES_DATABASE_URL": database_url,
            "HES_NATS_URL": nats_url,
            "HES_DB_SCHEMA": self.schema,
            "HES_NATS_PREFIX": self.prefix,
            "HES_PORT": str(self.port),
            "HES_DLMS_PUSH_PORT": str(free_port()),
            "HES_DATA_DIR": str(data_dir),
            "HES_JWT_SECRET": JWT_SECRET,
            "HES_LOG_LEVEL": "WARNING",
            "HES_RATE_LIMIT_PER_MINUTE": "100000",
            **env,
        }
        self.tokens = TokenService(JWT_SECRET, "hes", "hes-api")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        """Start ``hes up`` and wait until ``/health/ready`` answers 200."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.proc = spawn_child(
                [sys.executable, "-m", "hes.cli", "up"],
                death_signal=signal.SIGTERM,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.base}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"hes up not ready:\n{self.log.read_text()}"
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the process (Ctrl-C), then drop what it created."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        asyncio.run(self._drop_streams())
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )

    async def _drop_streams(self) -> None:
        nc = await nats.connect(self.nats_url)
        try:
            await delete_streams(nc.jetstream(), self.prefix)
        finally:
            await nc.close()

    def token(self, role: Role, subject: str | None = None, customer: str | None = None) -> str:
        """A token of this system for one role."""
        return self.tokens.issue(subject or f"{role.value}-b", [role], customer_account=customer)

    def ingest_token(self) -> str:
        """A gateway's token (scope ingest)."""
        return self.tokens.issue("gateway-b", [], scopes=[Scope.INGEST])

    async def gql(
        self, token: str, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """POST one GraphQL operation; the ``data`` of an answer without errors."""
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            response = await client.post(
                "/graphql",
                json={"query": query, "variables": variables or {}},
                headers={"Authorization": f"Bearer {token}"},
            )
        body: dict[str, Any] = response.json()
        assert not body.get("errors"), body
        data: dict[str, Any] = body["data"]
        return data

    def hes(self, *args: str, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        """Run a ``hes`` command against this system; fails when it exits non-zero."""
        return subprocess.run(
            [sys.executable, "-m", "hes.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
