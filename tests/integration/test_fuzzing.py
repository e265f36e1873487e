"""Fuzzing the running API: schemathesis over the OpenAPI spec, hypothesis-graphql over GraphQL.

Both run against a real uvicorn server, on a schema and stream prefix of their own, as a client
holding every role and scope (so requests reach the handlers, not only the guards), with few
examples per operation to stay fast. Any 5xx, and any GraphQL error that had to be masked (an
unexpected exception), fails the test.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import nats
import psycopg
import pytest
import schemathesis
from graphql import print_schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import mutations, nodes, queries
from psycopg import sql

from adapters.nats.streams import delete_streams
from api.app import create_app
from api.auth import TokenService
from api.graphql.schema import schema as graphql_schema
from bootstrap.container import Container
from bootstrap.migrate import migrate
from commands.context import Role
from config.settings import Settings
from tests.integration.live import serve

pytestmark = pytest.mark.integration
FUZZ = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@pytest.fixture(scope="module")
def live_api(settings: Settings, tokens: TokenService) -> Iterator[str]:
    """The API on its own schema and stream prefix: fuzzed data stays out of other tests."""
    fuzz = settings.replace(
        db_schema=settings.database.schema + "_fz",
        nats_prefix=settings.nats.prefix + "FZ",
        projection_wait_seconds=0.0,
    )
    asyncio.run(migrate(fuzz))
    try:
        with serve(create_app(Container(fuzz), tokens)) as address:
            yield f"http://{address}"
    finally:
        assert fuzz.database.url and fuzz.nats.url
        with psycopg.connect(fuzz.database.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(fuzz.database.schema))
            )

        async def drop_streams() -> None:
            nc = await nats.connect(fuzz.nats.url or "")
            await delete_streams(nc.jetstream(), fuzz.nats.prefix)
            await nc.close()

        asyncio.run(drop_streams())


@pytest.fixture(scope="module")
def superuser(live_api: str, tokens: TokenService) -> dict[str, str]:
    """Headers of an API key holding every role but customer and every scope."""
    admin = {"Authorization": "Bearer " + tokens.issue("fuzz-admin", [Role.ADMIN])}
    made = httpx.post(
        f"{live_api}/api/v1/api-keys",
        json={
            "name": "fuzzer",
            "roles": ["admin", "operator", "viewer", "auditor"],
            "scopes": ["ingest", "export", "events:read"],
        },
        headers=admin,
        timeout=10,
    )
    assert made.status_code == 201, made.text
    return {"X-API-Key": made.json()["key"]}


def test_rest_operations_never_answer_5xx(live_api: str, superuser: dict[str, str]) -> None:
    api = schemathesis.openapi.from_url(f"{live_api}/schema/openapi.json", timeout=10)
    operations = [result.ok() for result in api.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 20

    for operation in operations:
        _fuzz(operation, live_api, superuser)


def _fuzz(operation: Any, live_api: str, headers: dict[str, str]) -> None:
    """Few examples of one operation: never 5xx, and only statuses the operation documents."""

    @given(case=operation.as_strategy())
    @FUZZ
    def run(case: schemathesis.Case[Any]) -> None:
        response = case.call(base_url=live_api, headers=headers, timeout=30)
        where = (case.method, case.formatted_path, response.text[:300])
        assert response.status_code < 500, where
        _assert_documented(operation.definition.raw, response, where)

    run()


def _assert_documented(definition: dict[str, Any], response: Any, where: object) -> None:
    """The status is one the operation documents; an error is a problem+json as documented."""
    status = str(response.status_code)
    documented = definition["responses"]
    assert status in documented, (f"undocumented {status}", sorted(documented), where)
    if response.status_code >= 400 and "application/problem+json" in documented[status].get(
        "content", {}
    ):
        content_type = response.headers["content-type"]
        if isinstance(content_type, list):  # schemathesis keeps every value of a header
            content_type = content_type[0]
        assert content_type.startswith("application/problem+json"), where
        body = response.json()
        assert body["status"] == response.status_code and body["code"], where
        assert body["type"] == f"urn:hes:error:{body['code'].lower()}", where


def test_every_documented_refusal_is_real_and_as_documented(
    live_api: str, tokens: TokenService
) -> None:
    """Without credentials 401, without the grant 403, an oversized body 413, no generic 400."""
    spec = httpx.get(f"{live_api}/schema/openapi.json", timeout=10).json()
    assert "Problem" in spec["components"]["schemas"]
    nobody = {"Authorization": "Bearer " + tokens.issue("no-grants", [])}
    huge = b"x" * (2 * 1024 * 1024 + 1)
    checked = 0
    with httpx.Client(base_url=live_api, timeout=30) as client:
        for path, item in spec["paths"].items():
            url = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
            for method, op in item.items():
                responses = op["responses"]
                assert "status_code" not in str(responses), (method, path)  # Litestar's 400
                if "401" in responses and path != "/metrics":
                    answer = client.request(method, url)
                    assert answer.status_code == 401, (method, path, answer.text)
                    _assert_documented(op, answer, (method, path))
                    answer = client.request(method, url, headers=nobody)
                    assert answer.status_code == 403, (method, path, answer.text)
                    _assert_documented(op, answer, (method, path))
                    checked += 1
                if "requestBody" in op and "413" in responses and "telemetry" not in path:
                    answer = client.request(method, url, content=huge, headers=nobody)
                    assert answer.status_code in (401, 403, 413), (method, path)
    assert checked >= 20


SDL = print_schema(graphql_schema._schema)
SCALARS = {
    "DateTime": st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: nodes.String(d.isoformat())),
    "Date": st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 1, 1)).map(
        lambda d: nodes.String(d.isoformat())
    ),
    "Time": st.times().map(lambda t: nodes.String(t.isoformat())),
    "JSON": st.just(nodes.Object([])),
}


def _check(client: httpx.Client, query: str, headers: dict[str, str]) -> None:
    response = client.post("/graphql", json={"query": query}, headers=headers)
    assert response.status_code < 500, (query, response.text[:500])
    for error in response.json().get("errors") or []:
        assert not error["message"].startswith("internal error"), (query, error)


def test_graphql_queries_and_mutations_never_fail_unmasked(
    live_api: str, superuser: dict[str, str]
) -> None:
    with httpx.Client(base_url=live_api, timeout=30) as client:

        @given(
            query=queries(SDL, custom_scalars=SCALARS, allow_x00=True)
            | mutations(SDL, custom_scalars=SCALARS, allow_x00=True)
        )
        @settings(FUZZ, max_examples=100)
        def run(query: str) -> None:
            _check(client, query, superuser)

        run()


def test_graphql_fuzz_as_anonymous_only_meets_refusals(live_api: str) -> None:
    with httpx.Client(base_url=live_api, timeout=30) as client:

        @given(query=queries(SDL, custom_scalars=SCALARS, allow_x00=True))
        @settings(FUZZ, max_examples=30)
        def run(query: str) -> None:
            response = client.post("/graphql", json={"query": query})
            assert response.status_code < 500
            body = response.json()
            for error in body.get("errors") or []:
                code = (error.get("extensions") or {}).get("code")
                assert code in ("UNAUTHENTICATED", "QUERY_TOO_COSTLY", None), (query, error)
            data = body.get("data") or {}
            assert all(value is None for value in data.values()), (query, body)

        run()
