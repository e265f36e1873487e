"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec
from litestar import Controller, Request, Response, get

from api.services import Services
from processes.notifier import NOTIFIER, consumer_progress
from projections.feed_status import FeedStatus, read_states, read_statuses, reported


class Check(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One dependency's state."""

    ok: bool
    detail: str = ""
    lag: int | None = None


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    """Whether this process can serve, and why not."""

    ready: bool
    checks: dict[str, Check]


async def _postgres(container: Services) -> Check:
    try:
        async with container.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # any failure means "not ready": report it, don't raise
        return Check(ok=False, detail=f"{type(exc).__name__}: {exc}")
    return Check(ok=True)


async def _nats(container: Services) -> Check:
    nc = container.nats
    if nc is None or not nc.is_connected:
        return Check(ok=False, detail="not connected")
    try:
        await asyncio.wait_for(nc.jetstream().account_info(), timeout=2)
    except Exception as exc:
        return Check(ok=False, detail=f"JetStream: {type(exc).__name__}: {exc}")
    return Check(ok=True)


async def _redis(container: Services) -> Check:
    if container.redis is None:
        return Check(ok=True, detail="not configured: in-process stores")
    try:
        await asyncio.wait_for(container.redis.ping(), timeout=2)  # type: ignore[misc]
    except Exception as exc:
        return Check(ok=False, detail=f"{type(exc).__name__}: {exc}")
    return Check(ok=True)


def _judge(status: FeedStatus, max_lag: int) -> Check:
    """A projection's check: stalled or too far behind fails it."""
    problems = []
    if status.stalled and status.stall is not None:
        problems.append(
            f"{status.name} stalled {status.stall.describe()} "
            f"({status.failures} failures so far; `hes projections status`)"
        )
    if status.lag > max_lag:  # counted up to max_lag + 1
        problems.append(f"{status.name} is more than {max_lag} events behind")
    return Check(ok=not problems, lag=status.lag, detail="; ".join(problems) or status.state)


async def _notifier(container: Services, states: list[dict[str, Any]]) -> FeedStatus | None:
    nc = container.nats
    if nc is None or not nc.is_connected:
        return None
    progress = await asyncio.wait_for(consumer_progress(nc.jetstream(), container.settings.nats), 2)
    if progress is None:
        return None  # the notifier never ran against this deployment
    return reported(states, NOTIFIER, *progress)


async def _projections(container: Services) -> dict[str, Check]:
    """One check per projection, relay and the notifier, and their summary ``projections``."""
    s = container.settings
    try:
        states = await read_states(container.pool, s.database.schema)
        found = await read_statuses(
            container.pool, s.database.schema, s.api.ready_max_lag + 1, states
        )
        with contextlib.suppress(Exception):  # NATS down: its own check says so
            if (notifier := await _notifier(container, states)) is not None:
                found.append(notifier)
    except Exception as exc:
        return {"projections": Check(ok=False, detail=f"{type(exc).__name__}: {exc}")}
    checks = {f.name: _judge(f, s.api.ready_max_lag) for f in found}
    failing = [c.detail for c in checks.values() if not c.ok]
    summary = Check(
        ok=not failing,
        lag=max((c.lag or 0 for c in checks.values()), default=0),
        detail="; ".join(failing),
    )
    return {"projections": summary, **checks}


class PartHealth(Protocol):
    """A part this process runs besides the API (a child process, a listener, a server)."""

    name: str

    def health(self) -> tuple[bool, str]:
        """Whether it works, and a line saying how it is."""
        ...


def _parts(parts: Sequence[PartHealth]) -> dict[str, Check]:
    checks = {}
    for part in parts:
        ok, detail = part.health()
        checks[part.name] = Check(ok=ok, detail=detail)
    return checks


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
        """200 when every part works and no projection is stalled or behind, else 503.

        Parts: PostgreSQL, NATS, Redis, every projection and relay (stalled, lag) and the
        notifier, and what this process supervises (child processes, listeners, servers).
        """
        container: Services = request.app.state.container
        parts = _parts(request.app.state.get("parts", ()))  # first: the others may take seconds
        pg, js, cache, projections = await asyncio.gather(
            _postgres(container), _nats(container), _redis(container), _projections(container)
        )
        checks = {"postgres": pg, "nats": js, "redis": cache, **projections}
        checks.update(parts)
        ready = all(c.ok for c in checks.values())
        return Response(Readiness(ready=ready, checks=checks), status_code=200 if ready else 503)
