"""Per-client rate limiting, in Redis when configured (namespaced per deployment)."""

from __future__ import annotations

import msgspec
import pytest
import redis
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.auth import TokenService
from hes.container import Container
from hes.settings import Settings

pytestmark = pytest.mark.integration


async def test_requests_over_the_limit_get_429(settings: Settings, tokens: TokenService) -> None:
    # Own namespace, so the other tests' requests from the same test client don't count.
    limited = msgspec.structs.replace(
        settings, rate_limit_per_minute=5, db_schema=settings.db_schema + "_rl"
    )
    app = create_app(Container(limited), tokens)
    async with AsyncTestClient(app=app) as client:
        codes = [(await client.get("/api/v1/templates/meters")).status_code for _ in range(7)]
        assert codes == [200] * 5 + [429] * 2
        assert (await client.get("/health/live")).status_code == 200  # probes are exempt
        ready = (await client.get("/health/ready")).json()
    if settings.redis_url is None:
        assert ready["checks"]["redis"]["detail"].startswith("not configured")
        return
    assert ready["checks"]["redis"]["ok"]
    r = redis.Redis.from_url(settings.redis_url)
    keys = list(r.scan_iter(f"hes:{limited.db_schema}:rate_limit*"))
    assert keys, "rate-limit counters should live in Redis under this run's namespace"
    r.delete(*keys)
