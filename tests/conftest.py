"""Shared fixtures: real servers, an isolated schema and stream prefix per test run."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypedDict

import nats
import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg import sql

from adapters.nats.streams import delete_streams
from api.app import create_app
from api.auth import TokenService
from bootstrap.container import Container
from bootstrap.migrate import migrate
from bootstrap.relay import SupervisedRelay
from bootstrap.workers import (
    SupervisedProjection,
    alerts_projection,
    sims_projection,
    tariffs_projection,
)
from commands.context import Role, Scope
from config.settings import Settings
from tests import summary
from tests.services import Services, discover
from tests.worker_thread import WorkerThread

pytest_plugins = ["pytester", "tests.network_guard"]

RUN_ID = uuid.uuid4().hex[:8]
JWT_SECRET = "test-secret-" + "x" * 40


class WebhookAllowance(TypedDict):
    """The two webhook settings, as keyword arguments of ``Settings``."""

    webhook_http_hosts: str
    webhook_allowed_networks: str


LOOPBACK_WEBHOOKS = WebhookAllowance(
    webhook_http_hosts="127.0.0.1,localhost", webhook_allowed_networks="127.0.0.0/8,::1/128"
)
"""The tests' webhook receivers listen on loopback over plain http: allowed here, not by default."""


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """PostgreSQL, NATS (and Redis when present) for the whole run."""
    found = discover(tmp_path_factory.mktemp("servers"))
    yield found
    found.close()


@pytest.fixture(scope="session")
def settings(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of this run: own schema, own stream prefix, migrated; dropped at the end."""
    s = Settings.of(
        database_url=services.database_url,
        nats_url=services.nats_url,
        redis_url=services.redis_url,
        db_schema=f"t_{RUN_ID}",
        nats_prefix=f"T{RUN_ID}_",
        data_dir=Path(tmp_path_factory.mktemp("data")),
        jwt_secret=JWT_SECRET,
        projection_wait_seconds=10.0,
        rate_limit_per_minute=1_000_000,
        **LOOPBACK_WEBHOOKS,
    )
    asyncio.run(migrate(s))
    yield s
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(s.database.schema))
        )

    async def drop_streams() -> None:
        nc = await nats.connect(services.nats_url)
        await delete_streams(nc.jetstream(), s.nats.prefix)
        await nc.close()

    asyncio.run(drop_streams())


@pytest.fixture(scope="session")
def projection(settings: Settings) -> Iterator[SupervisedProjection]:
    """The meters projection worker, running for the whole test session."""
    worker = SupervisedProjection(settings)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def tariffs_worker(settings: Settings) -> Iterator[SupervisedProjection]:
    """The tariffs projection worker, running for the whole test session."""
    worker = tariffs_projection(settings)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def alerts_worker(settings: Settings) -> Iterator[SupervisedProjection]:
    """The alerts projection worker, running for the whole test session."""
    worker = alerts_projection(settings)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def sims_worker(settings: Settings) -> Iterator[SupervisedProjection]:
    """The SIM cards projection worker, running for the whole test session."""
    worker = sims_projection(settings)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def dlms_worker(settings: Settings) -> Iterator[SupervisedProjection]:
    """The DLMS read models' projection (remote commands, relay and key state), all session."""
    from bootstrap.dlms_process import dlms_projection

    worker = dlms_projection(settings)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def fleet_worker(settings: Settings) -> Iterator[SupervisedProjection]:
    """The fleet operations read models' projection (images, TOU plans, campaigns), all session."""
    from bootstrap.workers import fleet_projection

    worker = fleet_projection(settings)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def event_relays(settings: Settings) -> Iterator[list[SupervisedRelay]]:
    """Relays of the tariffs and alerts applications to HES_EVENTS for the whole session.

    (The meters relay is left to the relay tests, which count what it publishes.)
    """
    running = [SupervisedRelay(settings, name) for name in ("tariffs", "alerts")]
    for relay in running:
        relay.start()
    yield running
    for relay in running:
        relay.stop()


@pytest.fixture(scope="session")
def tokens() -> TokenService:
    """Token service sharing the test settings' secret."""
    return TokenService(JWT_SECRET, "hes", "hes-api")


@pytest.fixture(scope="session")
def auth(tokens: TokenService) -> Callable[..., dict[str, str]]:
    """Headers with a bearer token for the given role(s)."""

    def headers(*roles: Role, subject: str = "", customer: str | None = None) -> dict[str, str]:
        name = subject or "-".join(r.value for r in roles)
        token = tokens.issue(name, roles, customer_account=customer)
        return {"Authorization": f"Bearer {token}"}

    return headers


@pytest.fixture(scope="session")
async def client(
    settings: Settings, projection: SupervisedProjection, tokens: TokenService
) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    """The real Litestar app over ASGI, with its container opened by the app's lifespan."""
    app = create_app(Container(settings), tokens)
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


def new_serial(prefix: str = "SN") -> str:
    """A serial number no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:12].upper()}"


@pytest.fixture(scope="session")
def reading_worker(settings: Settings) -> Iterator[WorkerThread]:
    """Reading workers consuming this run's READINGS partitions for the whole session."""
    worker = WorkerThread(settings)
    worker.start()
    yield worker
    worker.stop()


def ingest_headers(tokens: TokenService) -> dict[str, str]:
    """Headers of a gateway holding the ingest scope."""
    token = tokens.issue("gateway-1", [], scopes=[Scope.INGEST])
    return {"Authorization": f"Bearer {token}"}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures tests reported (``tests.summary.report``) after the run."""
    for line in summary.LINES:
        terminalreporter.write_line(line)
