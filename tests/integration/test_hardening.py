"""Hardening: security headers, CORS, body limits, per-caller rate limits, dangerous commands."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from api.app import create_app
from api.auth import TokenService
from bootstrap.container import Container
from commands.context import Role
from config.settings import Settings, SettingsError
from tests.conftest import new_serial
from tests.integration.gql import REGISTER, gql, meter_input

pytestmark = pytest.mark.integration
Client = AsyncTestClient[Any]
Auth = Callable[..., dict[str, str]]
BULK = (
    "mutation($ids: [ID!]!, $c: String) { disconnectMeters(ids: $ids, confirm: $c) {"
    " __typename ... on BulkDisconnect { requested queued items { meterId errorCode"
    " command { id } } } ... on ValidationError { code fields { field rule message } }"
    " ... on ConflictError { code message } ... on ForbiddenError { code } } }"
)


@asynccontextmanager
async def _app(settings: Settings, tokens: TokenService, **changes: Any) -> AsyncIterator[Client]:
    changed = settings.replace(**changes)
    async with AsyncTestClient(app=create_app(Container(changed), tokens)) as client:
        yield client


async def test_security_headers_on_api_answers_and_pages(
    client: Client, settings: Settings, tokens: TokenService
) -> None:
    api = await client.get("/health/live")
    assert api.headers["x-content-type-options"] == "nosniff"
    assert api.headers["x-frame-options"] == "DENY"
    assert api.headers["referrer-policy"] == "no-referrer"
    assert api.headers["content-security-policy"].startswith("default-src 'none'")
    assert "strict-transport-security" not in api.headers
    page = await client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    csp = page.headers["content-security-policy"]
    # GraphiQL's files are the API's own: no CDN, no inline script
    assert "script-src 'self';" in csp and "unpkg" not in csp and "jsdelivr" not in csp
    assert "frame-ancestors 'none'" in csp
    async with _app(settings, tokens, https=True) as secure:
        hsts = (await secure.get("/health/live")).headers["strict-transport-security"]
        assert hsts.startswith("max-age=31536000")


async def test_cors_allows_only_configured_origins(
    settings: Settings, tokens: TokenService
) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with _app(settings, tokens, cors_origins="https://ops.example") as client:
        allowed = await client.options(
            "/graphql", headers={"Origin": "https://ops.example", **preflight}
        )
        assert allowed.status_code in (200, 204)
        assert allowed.headers["access-control-allow-origin"] == "https://ops.example"
        other = await client.options(
            "/graphql", headers={"Origin": "https://evil.example", **preflight}
        )
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"
    default = await client_without_cors(settings, tokens)
    assert default is None


async def client_without_cors(settings: Settings, tokens: TokenService) -> str | None:
    """The allow-origin header the default (no origins configured) app sends a foreign page."""
    async with _app(settings, tokens) as client:
        answer = await client.get("/health/live", headers={"Origin": "https://evil.example"})
        allowed: str | None = answer.headers.get("access-control-allow-origin")
        return allowed


async def test_request_bodies_over_the_limit_get_413(
    settings: Settings, tokens: TokenService, auth: Auth
) -> None:
    async with _app(settings, tokens, max_body_bytes=4096) as client:
        padding = "x" * 5000
        big = await client.post(
            "/graphql",
            json={"query": "{ fleet { region } }", "pad": padding},
            headers=auth(Role.VIEWER),
        )
        assert big.status_code == 413
        assert big.json()["code"] == "TOO_LARGE"
        small = await client.post(
            "/graphql", json={"query": "{ fleet { region } }"}, headers=auth(Role.VIEWER)
        )
        assert small.status_code == 200


async def test_rate_limit_counts_per_caller_not_per_address(
    settings: Settings, tokens: TokenService, auth: Auth
) -> None:
    limited = {"rate_limit_per_minute": 3, "db_schema": settings.database.schema + "_rc"}
    async with _app(settings, tokens, **limited) as client:
        ann, bob = auth(Role.VIEWER, subject="ann-rl"), auth(Role.VIEWER, subject="bob-rl")
        codes = [
            (await client.get("/api/v1/templates/meters", headers=ann)).status_code
            for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        # Same address, another caller: its own budget; anonymous callers share the address's.
        assert (await client.get("/api/v1/templates/meters", headers=bob)).status_code == 200
        assert (await client.get("/api/v1/templates/meters")).status_code == 200
        refused = await client.get("/api/v1/templates/meters", headers=ann)
        assert refused.status_code == 429 and refused.json()["code"] == "RATE_LIMITED"
        metrics = (await client.get("/metrics")).text
        assert (
            'hes_access_denied_total{interface="rest",reason="rate_limited",'
            'target="GET /api/v1/templates/meters"}' in metrics
        )
    if settings.api.redis_url:
        r = redis.Redis.from_url(settings.api.redis_url)
        keys = [k.decode() for k in r.scan_iter(f"hes:{limited['db_schema']}:rate_limit*")]
        assert any("actor:ann-rl" in k for k in keys), keys
        r.delete(*keys)


async def test_401_and_403_are_told_apart_everywhere(client: Client, auth: Auth) -> None:
    anonymous = await client.get("/api/v1/api-keys")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="hes", ApiKey realm="hes"'
    expired = await client.get(
        "/api/v1/api-keys",
        headers={
            "Authorization": "Bearer "
            + client.app.state.tokens.issue("x", [Role.ADMIN], ttl_seconds=-99)
        },
    )
    assert expired.status_code == 401 and expired.json()["detail"] == "token expired"
    viewer = await client.get("/api/v1/api-keys", headers=auth(Role.VIEWER))
    assert viewer.status_code == 403 and "www-authenticate" not in viewer.headers
    gql_anon = await gql(client, "{ fleet { region } }")
    assert gql_anon["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    gql_customer = await gql(
        client, "{ fleet { region } }", None, auth(Role.CUSTOMER, customer="C")
    )
    assert gql_customer["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_graphql_cost_and_pagination_caps(client: Client, auth: Auth) -> None:
    viewer = auth(Role.VIEWER)
    node = (
        "id serial manufacturer model firmware region area status customerAccount version"
        " connection { host port transport clientAddress serverAddress }"
        " location { address latitude longitude }"
    )
    pages = " ".join(
        f"p{i}: meters(first: 500) {{ edges {{ node {{ {node} }} }} }}" for i in range(10)
    )
    costly = await gql(client, "{ " + pages + " }", None, viewer)
    assert costly["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"
    capped = await gql(client, "{ meters(first: 501) { edges { cursor } } }", None, viewer)
    assert capped["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    via_get = await client.get(
        "/graphql",
        params={"query": 'mutation { revokeApiKey(prefix: "x", reason: "y") { __typename } }'},
        headers=auth(Role.ADMIN),
    )
    assert via_get.status_code in (400, 405)  # no mutations over GET (CSRF-safe)


async def _meters(client: Client, auth: Auth, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        made = await gql(
            client, REGISTER, {"input": meter_input(new_serial("BD"))}, auth(Role.OPERATOR)
        )
        ids.append(made["data"]["registerMeter"]["id"])
    return ids


async def test_bulk_disconnect_needs_confirmation_and_is_limited_per_actor(
    settings: Settings, tokens: TokenService, auth: Auth, client: Client
) -> None:
    ids = await _meters(client, auth, 7)
    small_ids, fresh, ids = ids[:2], ids[2], ids[3:]
    dangerous = {"dangerous_bulk_threshold": 2, "dangerous_per_hour": 1}
    async with _app(settings, tokens, **dangerous) as limited:
        olga = auth(Role.OPERATOR, subject=f"olga-{new_serial()}")
        small = await gql(limited, BULK, {"ids": small_ids}, olga)
        assert small["data"]["disconnectMeters"]["queued"] == 2, small
        missing = await gql(limited, BULK, {"ids": ids}, olga)
        result = missing["data"]["disconnectMeters"]
        assert result["__typename"] == "ValidationError"
        assert result["fields"][0]["field"] == "confirm"
        assert "'disconnectMeters 4'" in result["fields"][0]["message"]
        wrong = await gql(limited, BULK, {"ids": ids, "c": "disconnectMeters 3"}, olga)
        assert wrong["data"]["disconnectMeters"]["__typename"] == "ValidationError"
        confirmed = await gql(limited, BULK, {"ids": ids, "c": "disconnectMeters 4"}, olga)
        done = confirmed["data"]["disconnectMeters"]
        assert (done["requested"], done["queued"]) == (4, 4), done
        again = await gql(limited, BULK, {"ids": ids, "c": "disconnectMeters 4"}, olga)
        assert again["data"]["disconnectMeters"] == {
            "__typename": "ConflictError",
            "code": "RATE_LIMITED",
            "message": again["data"]["disconnectMeters"]["message"],
        }
        viewer = await gql(
            limited, BULK, {"ids": ids, "c": "disconnectMeters 4"}, auth(Role.VIEWER)
        )
        assert viewer["data"]["disconnectMeters"]["__typename"] == "ForbiddenError"
        unknown = await gql(
            limited, BULK, {"ids": [fresh, "00000000-0000-0000-0000-000000000000"]}, olga
        )
        items = unknown["data"]["disconnectMeters"]["items"]
        assert [i["errorCode"] for i in items] == [None, "NOT_FOUND"]
        metrics = (await limited.get("/metrics")).text
        for reason in ("confirmation_required", "rate_limited"):
            assert (
                f'hes_access_denied_total{{interface="graphql",reason="{reason}",'
                'target="disconnectMeters"}' in metrics
            )
    if settings.api.redis_url:
        r = redis.Redis.from_url(settings.api.redis_url)
        assert list(r.scan_iter(f"hes:{settings.database.schema}:dangerous*olga-*"))


async def test_refusals_inside_handlers_and_resolvers_are_counted_too(
    client: Client, auth: Auth
) -> None:
    viewer = auth(Role.VIEWER, subject="vera")
    # a resolver's own rule (only admins see everyone's subscriptions)
    body = await gql(client, "{ notificationSubscriptions(allOwners: true) { id } }", None, viewer)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body
    metrics = (await client.get("/metrics")).text
    assert (
        'hes_access_denied_total{interface="graphql",reason="forbidden",'
        'target="Query.<resolver>"}' in metrics
    )


async def test_metrics_token_closes_the_scrape_endpoint_to_everyone_else(
    settings: Settings, tokens: TokenService, auth: Auth
) -> None:
    token = "scrape-" + new_serial("T") * 2
    with pytest.raises(SettingsError, match="HES_METRICS_TOKEN"):
        Settings.of(metrics_token="short")
    async with _app(settings, tokens, metrics_token=token) as closed:
        before = REGISTRY.get_sample_value(
            "hes_access_denied_total",
            {"interface": "rest", "target": "GET /metrics", "reason": "unauthenticated"},
        )
        for headers in (
            {},
            {"Authorization": f"Bearer {token}x"},
            {"Authorization": token},
            auth(Role.ADMIN),  # a user's token is not the scraper's
        ):
            refused = await closed.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.json()["code"] == "UNAUTHENTICATED"
            assert "HES_METRICS_TOKEN" in refused.json()["detail"]
            assert token not in refused.text
        after = REGISTRY.get_sample_value(
            "hes_access_denied_total",
            {"interface": "rest", "target": "GET /metrics", "reason": "unauthenticated"},
        )
        assert (after or 0) - (before or 0) == 4
        scraped = await closed.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert scraped.status_code == 200 and "hes_access_denied_total" in scraped.text
