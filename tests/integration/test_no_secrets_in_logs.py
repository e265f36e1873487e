"""A realistic run with tokens, API keys, bad credentials and DLMS keys leaks no secret.

Every record logged during the run is captured as the JSON lines ``hes`` writes, but without
the scrubbing filter: the code itself must not log a secret (the filter is the last line of
defence, tested in tests/unit/test_logs.py). The answers' error messages, the event store and
the metrics are searched as well.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg import sql
from typer.testing import CliRunner

from api.auth import TokenService
from commands.context import Role
from config.logs import JsonFormatter
from config.settings import Settings
from hes.cli import app
from tests.conftest import JWT_SECRET, new_serial
from tests.integration.gql import REGISTER, gql, meter_input
from tests.integration.test_cli import _env

pytestmark = pytest.mark.integration
Client = AsyncTestClient[Any]
Auth = Callable[..., dict[str, str]]
SET_KEYS = (
    "mutation($id: ID!, $i: MeterKeysInput!, $c: String) { setMeterKeys(id: $id, input: $i,"
    " confirm: $c) { __typename ... on ValidationError { message fields { field message } } } }"
)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every record of every logger, as JSON lines, unscrubbed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _event_states(settings: Settings) -> str:
    assert settings.database.url
    texts: list[str] = []
    with psycopg.connect(settings.database.url) as conn:
        for table in ("meters_events", "api_keys_events"):
            rows = conn.execute(
                sql.SQL("SELECT convert_from(state, 'UTF8') FROM {}").format(
                    sql.Identifier(settings.database.schema, table)
                )
            ).fetchall()
            texts.extend(r[0] for r in rows)
    return "\n".join(texts)


async def test_a_full_run_logs_no_secret(
    client: Client,
    auth: Auth,
    tokens: TokenService,
    settings: Settings,
    captured: io.StringIO,
    tmp_path: Path,
) -> None:
    secrets_used: list[str] = [JWT_SECRET]
    answers: list[str] = []
    admin = auth(Role.ADMIN, subject=f"sec-admin-{new_serial()}")
    viewer = auth(Role.VIEWER)
    secrets_used += [admin["Authorization"][7:], viewer["Authorization"][7:]]

    # API keys: create (REST and GraphQL), use, rotate, use the old one, revoke, use again.
    made = await client.post(
        "/api/v1/api-keys", json={"name": "sec-rest", "roles": ["viewer"]}, headers=admin
    )
    rest_key = made.json()["key"]
    gql_made = await gql(
        client,
        'mutation { createApiKey(input: {name: "sec-gql", scopes: ["export"]})'
        " { ... on IssuedApiKey { key apiKey { prefix } } } }",
        None,
        admin,
    )
    gql_key = gql_made["data"]["createApiKey"]["key"]
    prefix = made.json()["apiKey"]["prefix"]
    assert (
        await client.get("/api/v1/meters/x/intervals", headers={"X-API-Key": gql_key})
    ).status_code != 401
    forbidden = await client.get("/api/v1/api-keys", headers={"X-API-Key": gql_key})
    assert forbidden.status_code == 403
    answers.append(forbidden.text)
    rotated = await client.post(f"/api/v1/api-keys/{prefix}/rotate", headers=admin)
    new_key = rotated.json()["key"]
    for headers in ({"X-API-Key": rest_key}, {"Authorization": f"ApiKey {rest_key}"}):
        old = await client.get("/api/v1/api-keys", headers=headers)
        assert old.status_code == 401
        answers.append(old.text)
    await client.post(f"/api/v1/api-keys/{prefix}/revoke", json={"reason": "test"}, headers=admin)
    answers.append((await client.get("/api/v1/api-keys", headers={"X-API-Key": new_key})).text)
    secrets_used += [k.split("_", 2)[2] for k in (rest_key, gql_key, new_key)]

    # Bad credentials of every shape.
    forged_key = f"hes_{'a' * 10}_{secrets.token_urlsafe(32)}"
    wrong_secret_token = jwt.encode(
        {
            "sub": "mallory",
            "roles": ["admin"],
            "iss": "hes",
            "aud": "hes-api",
            "iat": 0,
            "exp": 9e9,
        },
        "not-the-secret-" + secrets.token_hex(16),
        algorithm="HS256",
    )
    head, _, signature = viewer["Authorization"][7:].partition(".")
    tampered = head + ".eyJzdWIiOiJhZG1pbiIsInJvbGVzIjpbImFkbWluIl19." + signature.split(".")[-1]
    password = "hunter2-" + secrets.token_hex(8)
    for headers in (
        {"X-API-Key": forged_key},
        {"Authorization": f"Bearer {wrong_secret_token}"},
        {"Authorization": f"Bearer {tampered}"},
        {"Authorization": "Basic " + password},
        {"Authorization": f"ApiKey {password}"},
    ):
        refused = await client.get("/api/v1/api-keys", headers=headers)
        assert refused.status_code == 401
        answers.append(refused.text)
        refused_gql = await gql(client, "{ apiKeys { prefix } }", None, headers)
        answers.append(json.dumps(refused_gql))
    secrets_used += [forged_key.split("_", 2)[2], wrong_secret_token, tampered, password]

    # DLMS keys: set by an admin (a dangerous command), a malformed one refused.
    serial = new_serial("SK")
    registered = await gql(client, REGISTER, {"input": meter_input(serial)}, auth(Role.OPERATOR))
    meter = registered["data"]["registerMeter"]["id"]
    ek, ak, lls = secrets.token_hex(16), secrets.token_hex(16), "lls" + secrets.token_hex(6)
    keys = {"ek": ek, "ak": ak, "llsPassword": lls}
    unconfirmed = await gql(client, SET_KEYS, {"id": meter, "i": keys}, admin)
    assert unconfirmed["data"]["setMeterKeys"]["__typename"] == "ValidationError"
    stored = await gql(client, SET_KEYS, {"id": meter, "i": keys, "c": "setMeterKeys 1"}, admin)
    assert stored["data"]["setMeterKeys"]["__typename"] == "MeterKeysSet", stored
    bad_ek = "zz" + secrets.token_hex(15)
    malformed = await gql(
        client, SET_KEYS, {"id": meter, "i": {"ek": bad_ek, "ak": ak}, "c": "setMeterKeys 1"}, admin
    )
    assert malformed["data"]["setMeterKeys"]["__typename"] == "ValidationError"
    # A mistyped variable: graphql-core would echo the whole input object in its error.
    echoed_ek = secrets.token_hex(16)
    echoed = await gql(
        client,
        "mutation($id: ID!, $i: MeterKeysInput!) { setMeterKeys(id: $id, input: $i)"
        " { __typename } }",
        {"id": meter, "i": {"ek": echoed_ek, "ak": [ak], "pin": 1}},
        admin,
    )
    assert echoed["errors"][0]["message"].startswith("Variable '$i' has invalid value")
    answers += [json.dumps(unconfirmed), json.dumps(stored), json.dumps(malformed)]
    answers.append(json.dumps(echoed))
    secrets_used += [ek, ak, lls, bad_ek, echoed_ek]

    # DLMS key import from a file, as the CLI runs it.
    ek2, ak2, lls2 = secrets.token_hex(16), secrets.token_hex(16), "imp" + secrets.token_hex(6)
    keys_csv = tmp_path / "keys.csv"
    keys_csv.write_text(
        "serial,lls_password,ek_hex,ak_hex,system_title_hex\n"
        f"{serial},{lls2},{ek2},{ak2},\nNOPE,{lls2},{ek2[:-1]},{ak2},\n"
    )
    imported = CliRunner().invoke(
        app, ["dlms", "keys", "import", str(keys_csv)], env=_env(settings)
    )
    assert imported.exit_code == 1, imported.output  # one bad row
    answers.append(imported.output)
    secrets_used += [ek2, ak2, lls2, ek2[:-1]]

    metrics = (await client.get("/metrics")).text
    logs = captured.getvalue()
    assert "access denied" in logs and "apikey:" in logs  # the run did log its refusals
    haystacks = {
        "logs": logs,
        "answers": "\n".join(answers),
        "metrics": metrics,
        "events": _event_states(settings),
    }
    leaks = [
        f"{form[:6]}... in the {where}"
        for where, text in haystacks.items()
        for secret in secrets_used
        for form in {secret, secret.upper(), secret.lower()}
        if form in text
    ]
    assert leaks == []  # shows 6 characters of each leaked secret, never the secret
