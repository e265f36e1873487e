"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get

from hes.container import Container


class Check(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One dependency's state."""

    ok: bool
    detail: str = ""
    lag: int | None = None


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    """Whether this process can serve, and why not."""

    ready: bool
    checks: dict[str, Check]


async def _postgres(container: Container) -> Check:
    try:
        async with container.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # any failure means "not ready": report it, don't raise
        return Check(ok=False, detail=f"{type(exc).__name__}: {exc}")
    return Check(ok=True)


async def _nats(container: Container) -> Check:
    nc = container.nats
    if nc is None or not nc.is_connected:
        return Check(ok=False, detail="not connected")
    try:
        await asyncio.wait_for(nc.jetstream().account_info(), timeout=2)
    except Exception as exc:
        return Check(ok=False, detail=f"JetStream: {type(exc).__name__}: {exc}")
    return Check(ok=True)


async def _redis(container: Container) -> Check:
    if container.redis is None:
        return Check(ok=True, detail="not configured: in-process stores")
    try:
        await asyncio.wait_for(container.redis.ping(), timeout=2)  # type: ignore[misc]
    except Exception as exc:
        return Check(ok=False, detail=f"{type(exc).__name__}: {exc}")
    return Check(ok=True)


async def _projections(container: Container) -> Check:
    try:
        recorded = await container.meters.recorded_position()
        applied = await container.meters.applied_position()
    except Exception as exc:
        return Check(ok=False, detail=f"{type(exc).__name__}: {exc}")
    lag = max(0, recorded - applied)
    ok = lag <= container.settings.ready_max_lag
    return Check(ok=ok, lag=lag, detail="" if ok else f"meters_view is {lag} events behind")


class Health(Controller):
    """Probes for orchestrators and load balancers."""

    path = "/health"
    tags = ["health"]

    @get("/live", summary="Liveness")
    async def live(self) -> dict[str, str]:
        """Always 200 while the process serves HTTP."""
        return {"status": "ok"}

    @get("/ready", summary="Readiness")
    async def ready(self, request: Request[Any, Any, Any]) -> Response[Readiness]:
        """200 when PostgreSQL and NATS answer and the projections are caught up, else 503."""
        container: Container = request.app.state.container
        pg, js, cache, proj = await asyncio.gather(
            _postgres(container), _nats(container), _redis(container), _projections(container)
        )
        checks = {"postgres": pg, "nats": js, "redis": cache, "projections": proj}
        ready = all(c.ok for c in checks.values())
        return Response(Readiness(ready=ready, checks=checks), status_code=200 if ready else 503)
