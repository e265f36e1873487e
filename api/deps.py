"""Litestar dependencies that build the per-request context."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.types import Scope

from api.auth import TokenService
from api.authentication import authentication_of
from api.context import RequestContext, correlation_id
from api.services import Services


async def request_context(request: Request[Any, Any, Any]) -> RequestContext:
    """Context of an HTTP request: container, caller, correlation id."""
    return context_from(request.app.state, request.headers, request.scope)


async def graphql_context(state: State, headers: dict[str, str], scope: Scope) -> RequestContext:
    """Context of a GraphQL operation over HTTP or websocket (same fields as REST)."""
    return context_from(state, headers, scope)


def context_from(state: State, headers: Mapping[str, str], scope: Scope) -> RequestContext:
    """Build the per-request context from application state, headers and the resolved caller."""
    container: Services = state.container
    tokens: TokenService = state.tokens
    return RequestContext(
        container=container,
        tokens=tokens,
        authorization=headers.get("authorization"),
        correlation_id=correlation_id(headers),
        authentication=authentication_of(scope),
        authenticator=state.authenticator,
        dangerous=state.dangerous,
    )
