"""No 5xx from input: out-of-range numbers, deep nesting and oversize bodies get 4xx answers.

Telemetry is judged reading by reading: a non-finite or out-of-range value is one rejection
(rule ``not-finite`` or ``range``) beside the readings that are accepted, never a 500 after a
partial store. JSON nested deeper than the parsers go answers 400 with problem+json on every
endpoint that reads JSON, GraphQL ``variables`` included.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from api.auth import TokenService
from commands.context import Role
from tests.conftest import ingest_headers, new_serial
from tests.integration.gql import REGISTER, gql, meter_input

pytestmark = pytest.mark.integration
Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Any]
DEEP = 100_000


async def _meter(client: Client, auth: Auth) -> str:
    serial = new_serial("NF")
    connection = {"host": "127.0.0.1", "port": 4059, "transport": "WRAPPER"}
    body = await gql(
        client,
        REGISTER,
        {"input": meter_input(serial, connection=connection)},
        auth(Role.OPERATOR),
    )
    assert body["data"]["registerMeter"]["__typename"] == "Meter", body
    return serial


async def test_a_non_finite_value_is_one_rejection_beside_the_accepted_readings(
    client: Client, auth: Auth, tokens: TokenService
) -> None:
    serial = await _meter(client, auth)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    items = [
        f'{{"meter_id": "{serial}", "timestamp": "{(start + timedelta(minutes=i)).isoformat()}",'
        f' "voltage": {230 + i}}}'
        for i in range(5)
    ]
    items.append(
        f'{{"meter_id": "{serial}", "timestamp": "{(start + timedelta(minutes=9)).isoformat()}",'
        ' "voltage": 1e400, "current": 5.0}'
    )
    items.append(
        f'{{"meter": "{serial}", "readings": [{{"obis": "current_l1", "value": -1e999,'
        f' "ts": "{(start + timedelta(minutes=10)).isoformat()}"}},'
        f' {{"obis": "current_l1", "value": 1e300, "ts": "{start.isoformat()}"}},'
        f' {{"obis": "current_l1", "value": 7.5, "ts": "{start.isoformat()}"}}]}}'
    )
    response = await client.post(
        "/telemetry/batch", content="[" + ",".join(items) + "]", headers=ingest_headers(tokens)
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == 7, result  # five voltages, the 5 A current, the 7.5 A current
    assert sorted((e["item"], e["field"], e["rule"]) for e in result["errors"]) == [
        (5, "voltage", "not-finite"),
        (6, "readings[0].value", "not-finite"),
        (6, "readings[1].value", "range"),
    ]


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def test_json_nested_far_too_deep_answers_400_everywhere(
    client: Client, auth: Auth, tokens: TokenService
) -> None:
    deep = _nested(DEEP)
    deep_object = '{"a":' * DEEP + "1" + "}" * DEEP
    cases = [
        ("/telemetry/batch", deep, ingest_headers(tokens)),
        (
            "/telemetry/batch",
            f'[{{"meter_id": "X", "timestamp": 0, "region": {deep}}}]',
            ingest_headers(tokens),
        ),
        ("/api/v1/commands/meters/register", deep_object, auth(Role.OPERATOR)),
        ("/api/v1/api-keys", deep_object, auth(Role.ADMIN)),
        (
            "/graphql",
            f'{{"query": "{{ fleet {{ region }} }}", "variables": {deep_object}}}',
            auth(Role.ADMIN),
        ),
        ("/graphql", deep, auth(Role.ADMIN)),
    ]
    for path, body, headers in cases:
        response = await client.post(
            path, content=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert response.status_code in (400, 413), (path, response.status_code, response.text[:300])
        assert response.headers["content-type"].startswith("application/problem+json"), path
        assert response.json()["status"] == response.status_code


async def test_a_deep_graphql_document_is_refused_without_a_500(client: Client, auth: Auth) -> None:
    query = "{ " + "meters { edges { node { " * 5_000 + "id" + " } } }" * 5_000 + " }"
    response = await client.post("/graphql", json={"query": query}, headers=auth(Role.ADMIN))
    assert response.status_code < 500, response.text[:300]
    errors = response.json()["errors"]
    assert errors and not errors[0]["message"].startswith("internal error"), errors


async def test_graphql_variables_nested_within_the_limit_are_judged_by_the_schema(
    client: Client, auth: Auth
) -> None:
    variables = {"f": json.loads('{"region": ' + _nested(200) + "}")}
    body = await client.post(
        "/graphql",
        json={
            "query": "query($f: MeterFilterInput) { meters(filter: $f) { edges { cursor } } }",
            "variables": variables,
        },
        headers=auth(Role.VIEWER),
    )
    assert body.status_code == 200, body.text[:300]
    (error,) = body.json()["errors"]
    assert "internal error" not in error["message"]
