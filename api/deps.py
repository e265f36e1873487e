"""Litestar dependencies that build the per-request context."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Request
from litestar.datastructures import State

from api.auth import TokenService
from api.context import RequestContext, correlation_id
from hes.container import Container


async def request_context(request: Request[Any, Any, Any]) -> RequestContext:
    """Context of an HTTP request: container, token service, auth header, correlation id."""
    return context_from(request.app.state, request.headers)


async def graphql_context(state: State, headers: dict[str, str]) -> RequestContext:
    """Context of a GraphQL operation over HTTP or websocket (same fields as REST)."""
    return context_from(state, headers)


def context_from(state: State, headers: Mapping[str, str]) -> RequestContext:
    """Build the per-request context from application state and request headers."""
    container: Container = state.container
    tokens: TokenService = state.tokens
    return RequestContext(
        container=container,
        tokens=tokens,
        authorization=headers.get("authorization"),
        correlation_id=correlation_id(headers),
    )
