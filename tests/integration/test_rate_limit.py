"""Per-client rate limiting, in Redis when configured (namespaced per deployment)."""

from __future__ import annotations

from typing import cast

import httpx
import pytest
import redis
from litestar.testing import AsyncTestClient
from litestar.types import Scope

from api.app import create_app
from api.auth import TokenService
from api.client_address import client_address
from bootstrap.container import Container
from config.settings import Settings
from domain.networks import parse_networks
from tests.integration.live import serve

pytestmark = pytest.mark.integration


async def test_requests_over_the_limit_get_429(settings: Settings, tokens: TokenService) -> None:
    # Own namespace, so the other tests' requests from the same test client don't count.
    limited = settings.replace(rate_limit_per_minute=5, db_schema=settings.database.schema + "_rl")
    app = create_app(Container(limited), tokens)
    async with AsyncTestClient(app=app) as client:
        codes = [(await client.get("/api/v1/templates/meters")).status_code for _ in range(7)]
        assert codes == [200] * 5 + [429] * 2
        assert (await client.get("/health/live")).status_code == 200  # probes are exempt
        ready = (await client.get("/health/ready")).json()
    if settings.api.redis_url is None:
        assert ready["checks"]["redis"]["detail"].startswith("not configured")
        return
    assert ready["checks"]["redis"]["ok"]
    r = redis.Redis.from_url(settings.api.redis_url)
    keys = list(r.scan_iter(f"hes:{limited.database.schema}:rate_limit*"))
    assert keys, "rate-limit counters should live in Redis under this run's namespace"
    r.delete(*keys)


def _limited(settings: Settings, per_minute: int, suffix: str, **changes: object) -> Settings:
    """Settings with a small limit and a rate-limit namespace of this test's own."""
    return settings.replace(
        rate_limit_per_minute=per_minute,
        db_schema=f"{settings.database.schema}_{suffix}",
        **changes,  # type: ignore[arg-type]
    )


async def test_exemptions_are_exact_paths_not_substrings(
    settings: Settings, tokens: TokenService
) -> None:
    app = create_app(Container(_limited(settings, 3, "rlp")), tokens)
    async with AsyncTestClient(app=app) as client:
        tricks = [
            "/api/v1/meters/health-1/intervals",
            "/api/v1/meters/metrics/intervals",
            "/api/v1/meters/schema/intervals",
            "/health/ready/../../api/v1/templates/meters",
        ]
        codes = [(await client.get(tricks[i % len(tricks)])).status_code for i in range(5)]
        assert codes[3:] == [429, 429], codes
        refused = await client.get("/api/v1/meters/health-1/intervals")
        assert refused.status_code == 429
        # The exempt paths themselves are still never limited.
        for path in ("/health/live", "/health/ready", "/metrics", "/schema/openapi.json"):
            assert (await client.get(path)).status_code != 429, path


async def test_429_says_when_to_retry(settings: Settings, tokens: TokenService) -> None:
    app = create_app(Container(_limited(settings, 2, "rlr")), tokens)
    async with AsyncTestClient(app=app) as client:
        for _ in range(2):
            ok = await client.get("/api/v1/templates/meters")
            assert ok.status_code == 200 and "retry-after" not in ok.headers
        refused = await client.get("/api/v1/templates/meters")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60


def _spoofing(base: str, count: int, header: str) -> list[int]:
    """Anonymous requests, each claiming another client address in ``header``."""
    codes = []
    with httpx.Client(base_url=f"http://{base}", timeout=10) as http:
        for i in range(count):
            value = (
                f"198.51.100.{i + 1}" if header == "X-Forwarded-For" else f"for=198.51.100.{i + 1}"
            )
            codes.append(http.get("/api/v1/templates/meters", headers={header: value}).status_code)
    return codes


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded"])
def test_forwarded_headers_from_untrusted_peers_are_ignored(
    settings: Settings, tokens: TokenService, header: str
) -> None:
    # Served like `hes up` serves it, on 127.0.0.1 with HES_TRUSTED_PROXIES unset.
    suffix = "rlx" if header == "X-Forwarded-For" else "rlf"
    app = create_app(Container(_limited(settings, 3, suffix)), tokens)
    with serve(app) as base:
        assert _spoofing(base, 5, header) == [200, 200, 200, 429, 429]


def test_forwarded_headers_from_a_trusted_proxy_name_the_client(
    settings: Settings, tokens: TokenService
) -> None:
    limited = _limited(settings, 2, "rlt", trusted_proxies="127.0.0.0/8, ::1")
    with serve(create_app(Container(limited), tokens)) as base:
        # Each forwarded client has its own budget behind the trusted proxy...
        assert _spoofing(base, 4, "X-Forwarded-For") == [200] * 4
        with httpx.Client(base_url=f"http://{base}", timeout=10) as http:
            # ...and a client cannot escape its budget by prepending addresses of its own:
            # the proxy appends the real one, which is what counts.
            chains = [f"203.0.113.{i}, 192.0.2.7" for i in range(3)]
            codes = [
                http.get("/api/v1/templates/meters", headers={"X-Forwarded-For": c}).status_code
                for c in chains
            ]
    assert codes == [200, 200, 429]


def test_client_address_rules() -> None:
    trusted = parse_networks("192.0.2.0/24,2001:db8::/32")  # documentation ranges (RFC 5737)

    def scope(peer: str, *headers: tuple[str, str]) -> Scope:
        raw = [(k.lower().encode(), v.encode()) for k, v in headers]
        return cast(Scope, {"type": "http", "client": (peer, 1234), "headers": raw})

    xff = ("X-Forwarded-For", "198.51.100.1, 192.0.2.200")
    assert client_address(scope("203.0.113.9", xff), trusted) == "203.0.113.9"
    assert client_address(scope("192.0.2.2", xff), trusted) == "198.51.100.1"
    assert client_address(scope("192.0.2.2", xff), ()) == "192.0.2.2"
    forwarded = ("Forwarded", 'for="[2001:db8::5]:80", for=198.51.100.4;proto=https')
    assert client_address(scope("2001:db8::1", forwarded), trusted) == "198.51.100.4"
    unknown = ("X-Forwarded-For", "unknown")
    assert client_address(scope("192.0.2.2", unknown), trusted) == "192.0.2.2"
    only_proxies = ("X-Forwarded-For", "192.0.2.3")
    assert client_address(scope("192.0.2.2", only_proxies), trusted) == "192.0.2.2"
