"""When the database misbehaves, clients get a clean error, never internals or a bare 500."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.auth import TokenService
from bootstrap.container import Container
from commands.context import Role
from config.settings import Settings
from tests.conftest import new_serial
from tests.integration.gql import REGISTER, gql, meter_input

pytestmark = pytest.mark.integration


async def test_broken_read_model_and_store_are_masked(
    settings: Settings, tokens: TokenService, auth: Callable[..., dict[str, str]]
) -> None:
    broken = settings.replace(db_schema="schema_that_does_not_exist")
    app = create_app(Container(broken), tokens)
    async with AsyncTestClient(app=app) as client:
        listed = await gql(client, "{ meters { edges { cursor } } }", None, auth(Role.VIEWER))
        assert listed["errors"][0]["message"].startswith("internal error")
        assert "schema_that_does_not_exist" not in str(listed)

        registered = await gql(
            client, REGISTER, {"input": meter_input(new_serial())}, auth(Role.OPERATOR)
        )
        assert registered["errors"][0]["message"].startswith("internal error")

        rest = await client.post(
            "/api/v1/commands/meters/register",
            json={
                "serial": new_serial(),
                "manufacturer": "A",
                "model": "B",
                "firmware": "1",
                "phases": 1,
                "region": "R",
                "area": "A",
                "connection": {"host": "127.0.0.1"},
            },
            headers=auth(Role.OPERATOR),
        )
        assert rest.status_code == 500
        assert rest.json()["code"] == "INTERNAL"
        assert "does_not_exist" not in rest.text

        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert not ready.json()["checks"]["projections"]["ok"]
