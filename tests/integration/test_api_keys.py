"""API keys: admin-only management, shown once, stored hashed, revocation and rotation at once."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg import sql
from typer.testing import CliRunner

from commands.context import Role
from config.settings import Settings
from hes.cli import app
from tests.conftest import new_serial
from tests.integration.gql import gql
from tests.integration.test_cli import _env

pytestmark = pytest.mark.integration
Client = AsyncTestClient[Any]
Auth = Callable[..., dict[str, str]]

CREATE = (
    "mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { __typename"
    " ... on IssuedApiKey { key apiKey { prefix name roles scopes generation active createdBy } }"
    " ... on ValidationError { code fields { field rule message } }"
    " ... on ForbiddenError { code message } } }"
)
ROTATE = (
    "mutation($p: String!) { rotateApiKey(prefix: $p) { __typename"
    " ... on IssuedApiKey { key apiKey { generation rotatedBy } }"
    " ... on ConflictError { code message } ... on NotFoundError { code } } }"
)
REVOKE = (
    "mutation($p: String!, $r: String!) { revokeApiKey(prefix: $p, reason: $r) { __typename"
    " ... on ApiKey { active revokedBy revokeReason } ... on ConflictError { code message }"
    " ... on ValidationError { code fields { field rule } } } }"
)
LIST = "{ apiKeys { prefix name roles scopes generation active revokedAt } }"
TEMPLATE_OK = "/api/v1/commands/meters/register"


def _events(settings: Settings, prefix: str) -> list[str]:
    assert settings.database.url
    from domain.api_key import api_key_id

    with psycopg.connect(settings.database.url) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT topic, convert_from(state, 'UTF8') FROM {} WHERE originator_id = %s"
                " ORDER BY originator_version"
            ).format(sql.Identifier(settings.database.schema, "api_keys_events")),
            (api_key_id(prefix),),
        ).fetchall()
    return [f"{topic} {state}" for topic, state in rows]


async def _meters_as(client: Client, headers: dict[str, str]) -> dict[str, Any]:
    return await gql(client, "{ meters(first: 1) { edges { cursor } } }", None, headers)


async def test_admin_creates_a_key_that_works_at_once_and_is_stored_hashed(
    client: Client, auth: Auth, settings: Settings
) -> None:
    admin = auth(Role.ADMIN, subject="ada")
    made = await gql(
        client,
        CREATE,
        {"i": {"name": "mdm-export", "scopes": ["export"], "roles": ["viewer"]}},
        admin,
    )
    issued = made["data"]["createApiKey"]
    assert issued["__typename"] == "IssuedApiKey", made
    key, info = issued["key"], issued["apiKey"]
    assert key.startswith(f"hes_{info['prefix']}_") and len(key) == 4 + 10 + 1 + 43
    assert info | {"prefix": "-"} == {
        "prefix": "-",
        "name": "mdm-export",
        "roles": ["viewer"],
        "scopes": ["export"],
        "generation": 1,
        "active": True,
        "createdBy": "ada",
    }
    # Three ways to present it; each authenticates as the key's roles.
    for headers in (
        {"X-API-Key": key},
        {"Authorization": f"ApiKey {key}"},
        {"Authorization": f"Bearer {key}"},
    ):
        body = await _meters_as(client, headers)
        assert "errors" not in body, body
    # Stored: the digest only; the events name neither the secret nor its digest.
    secret = key.split("_", 2)[2]
    digest = hashlib.sha256(secret.encode()).digest()
    assert settings.database.url
    with psycopg.connect(settings.database.url) as conn:
        stored = conn.execute(
            sql.SQL("SELECT digest FROM {} WHERE prefix = %s").format(
                sql.Identifier(settings.database.schema, "api_key_secrets")
            ),
            (info["prefix"],),
        ).fetchall()
    assert [bytes(r[0]) for r in stored] == [digest]
    events = " ".join(_events(settings, info["prefix"]))
    assert "ApiKey.Created" in events and '"actor":"ada"' in events
    for leak in (secret, key, digest.hex(), secret[:16]):
        assert leak not in events
    # Listed by prefix only, for admins and auditors.
    for role in (Role.ADMIN, Role.AUDITOR):
        listed = await gql(client, LIST, None, auth(role))
        mine = [k for k in listed["data"]["apiKeys"] if k["prefix"] == info["prefix"]]
        assert mine and mine[0]["active"] is True
        assert secret not in str(listed)


async def test_revocation_and_rotation_take_effect_on_the_next_request(
    client: Client, auth: Auth, settings: Settings
) -> None:
    admin = auth(Role.ADMIN, subject="root")
    made = await gql(client, CREATE, {"i": {"name": "gw-rot", "roles": ["viewer"]}}, admin)
    old = made["data"]["createApiKey"]["key"]
    prefix = made["data"]["createApiKey"]["apiKey"]["prefix"]
    assert "errors" not in await _meters_as(client, {"X-API-Key": old})

    rotated = await gql(client, ROTATE, {"p": prefix}, admin)
    new = rotated["data"]["rotateApiKey"]["key"]
    assert rotated["data"]["rotateApiKey"]["apiKey"] == {"generation": 2, "rotatedBy": "root"}
    assert new != old and new.startswith(f"hes_{prefix}_")
    refused = await _meters_as(client, {"X-API-Key": old})
    assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert "errors" not in await _meters_as(client, {"X-API-Key": new})

    revoked = await gql(client, REVOKE, {"p": prefix, "r": "gateway stolen"}, admin)
    assert revoked["data"]["revokeApiKey"] == {
        "__typename": "ApiKey",
        "active": False,
        "revokedBy": "root",
        "revokeReason": "gateway stolen",
    }
    after = await _meters_as(client, {"X-API-Key": new})
    assert after["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    rest = await client.get("/api/v1/api-keys", headers={"X-API-Key": new})
    assert rest.status_code == 401 and "ApiKey" in rest.headers["www-authenticate"]
    again = await gql(client, REVOKE, {"p": prefix, "r": "twice"}, admin)
    assert again["data"]["revokeApiKey"]["code"] == "CONFLICT"
    no_rotation = await gql(client, ROTATE, {"p": prefix}, admin)
    assert no_rotation["data"]["rotateApiKey"]["code"] == "CONFLICT"
    topics = [e.split(" ")[0].rsplit(".", 1)[-1] for e in _events(settings, prefix)]
    assert topics == ["Created", "Rotated", "Revoked"]
    # An auditor reads the key's management history by its prefix; no secret is in it.
    history = await gql(
        client,
        "query($p: ID!) { history(aggregateId: $p) { type actor application payload } }",
        {"p": prefix},
        auth(Role.AUDITOR),
    )
    entries = history["data"]["history"]
    assert [(e["type"], e["application"]) for e in entries] == [
        ("Created", "api_keys"),
        ("Rotated", "api_keys"),
        ("Revoked", "api_keys"),
    ]
    # The secret is everything after ``hes_<prefix>_``; token_urlsafe may itself contain "_".
    assert old.split("_", 2)[2] not in str(entries) and new.split("_", 2)[2] not in str(entries)


async def test_only_admins_manage_keys_and_bad_input_names_the_field(
    client: Client, auth: Auth
) -> None:
    for role in (Role.VIEWER, Role.OPERATOR, Role.AUDITOR):
        made = await gql(client, CREATE, {"i": {"name": "x", "scopes": ["ingest"]}}, auth(role))
        assert made["data"]["createApiKey"]["__typename"] == "ForbiddenError", (role, made)
    anonymous = await gql(client, CREATE, {"i": {"name": "x", "scopes": ["ingest"]}})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    listed = await gql(client, LIST, None, auth(Role.OPERATOR))
    assert listed["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    bad = await gql(
        client,
        CREATE,
        {"i": {"name": " ", "scopes": ["root"], "roles": ["customer"]}},
        auth(Role.ADMIN),
    )
    fields = {(f["field"], f["rule"]) for f in bad["data"]["createApiKey"]["fields"]}
    assert fields == {("name", "format"), ("scopes[0]", "allowed"), ("roles[0]", "allowed")}
    empty = await gql(client, CREATE, {"i": {"name": "nothing"}}, auth(Role.ADMIN))
    assert empty["data"]["createApiKey"]["fields"][0]["field"] == "scopes"
    unknown = await gql(client, ROTATE, {"p": "zzzzzzzzzz"}, auth(Role.ADMIN))
    assert unknown["data"]["rotateApiKey"] == {"__typename": "NotFoundError", "code": "NOT_FOUND"}


async def test_rest_key_management_and_scoped_use(client: Client, auth: Auth) -> None:
    admin = auth(Role.ADMIN)
    created = await client.post(
        "/api/v1/api-keys", json={"name": "gw-rest", "scopes": ["ingest"]}, headers=admin
    )
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    key, prefix = created.json()["key"], created.json()["apiKey"]["prefix"]

    # An ingest-only key may post telemetry but not read meters or manage keys.
    gateway = {"X-API-Key": key}
    telemetry = await client.post("/api/v1/telemetry/batch", json=[], headers=gateway)
    assert telemetry.status_code != 403 and telemetry.status_code != 401, telemetry.text
    assert (await client.get("/api/v1/api-keys", headers=gateway)).status_code == 403
    refused = await _meters_as(client, gateway)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    listed = await client.get("/api/v1/api-keys", headers=auth(Role.AUDITOR))
    assert listed.status_code == 200
    row = next(k for k in listed.json() if k["prefix"] == prefix)
    assert set(row) == {
        "prefix",
        "name",
        "roles",
        "scopes",
        "generation",
        "active",
        "createdAt",
        "createdBy",
        "rotatedAt",
        "rotatedBy",
        "revokedAt",
        "revokedBy",
        "revokeReason",
    }
    assert key.split("_", 2)[2] not in listed.text

    rotated = await client.post(f"/api/v1/api-keys/{prefix}/rotate", headers=admin)
    assert rotated.status_code == 200 and rotated.json()["key"] != key
    revoked = await client.post(
        f"/api/v1/api-keys/{prefix}/revoke", json={"reason": "decommissioned"}, headers=admin
    )
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    gone = await client.post(
        "/api/v1/telemetry/batch", json=[], headers={"X-API-Key": rotated.json()["key"]}
    )
    assert gone.status_code == 401
    assert gone.json()["code"] == "UNAUTHENTICATED"
    missing = await client.post(
        f"/api/v1/api-keys/{new_serial().lower()[:10]}/rotate", headers=admin
    )
    assert missing.status_code == 404
    forbidden = await client.post(
        "/api/v1/api-keys", json={"name": "x", "scopes": ["ingest"]}, headers=auth(Role.OPERATOR)
    )
    assert forbidden.status_code == 403 and forbidden.json()["code"] == "FORBIDDEN"


async def test_malformed_and_conflicting_credentials_are_401(client: Client, auth: Auth) -> None:
    cases: list[dict[str, str]] = [
        {"X-API-Key": "hes_short"},
        {"X-API-Key": "hes_abcdefghij_" + "A" * 43},
        {"Authorization": "ApiKey "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not.a.jwt"},
        {"X-API-Key": "x" * 5000},
        {**auth(Role.ADMIN), "X-API-Key": "hes_abcdefghij_" + "A" * 43},
    ]
    for headers in cases:
        response = await client.get("/api/v1/api-keys", headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
    # A public route still answers with a bad credential.
    assert (await client.get("/health/live", headers=cases[1])).status_code == 200


def test_cli_creates_lists_rotates_and_revokes(settings: Settings) -> None:
    runner = CliRunner()
    env = _env(settings)
    made = runner.invoke(app, ["keys", "create", "cli-gw", "--scope", "ingest"], env=env)
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert key.startswith("hes_") and "\n" not in key
    prefix = key.split("_")[1]
    listed = runner.invoke(app, ["keys", "list", "--json"], env=env)
    assert listed.exit_code == 0
    assert prefix in listed.stdout and key.split("_", 2)[2] not in listed.stdout
    rotated = runner.invoke(app, ["keys", "rotate", prefix], env=env)
    assert rotated.exit_code == 0 and rotated.stdout.strip() != key
    revoked = runner.invoke(app, ["keys", "revoke", prefix, "--reason", "test"], env=env)
    assert revoked.exit_code == 0, revoked.output
    twice = runner.invoke(app, ["keys", "revoke", prefix, "--reason", "test"], env=env)
    assert twice.exit_code == 1 and "already revoked" in twice.output
    bad = runner.invoke(app, ["keys", "create", "x", "--scope", "root"], env=env)
    assert bad.exit_code == 2
