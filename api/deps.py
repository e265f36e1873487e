"""Litestar dependencies that build the per-request context."""

from __future__ import annotations

from typing import Any

from litestar import Request

from api.auth import TokenService
from api.context import RequestContext, correlation_id
from hes.container import Container


async def request_context(request: Request[Any, Any, Any]) -> RequestContext:
    """Context of an HTTP request: container, token service, auth header, correlation id."""
    state = request.app.state
    container: Container = state.container
    tokens: TokenService = state.tokens
    return RequestContext(
        container=container,
        tokens=tokens,
        authorization=request.headers.get("authorization"),
        correlation_id=correlation_id(request.headers),
    )
