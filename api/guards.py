"""The Litestar guard that checks every route against ``api.rest.operations.REST``."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler

from api.auth import Unauthenticated
from api.authentication import authentication_of
from api.denials import Reason, record_denial
from api.rest.operations import REST
from domain.errors import Forbidden


class AccessDenied(Forbidden):
    """A refusal of the access table (already logged and counted)."""

    recorded = True


def route_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """``<METHOD> <path template>`` of the matched route (``WS`` for websockets)."""
    scope = connection.scope
    if scope["type"] == ScopeType.WEBSOCKET:
        return f"WS {scope['path_template']}"
    return f"{scope['method']} {scope['path_template']}"


async def access_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """401 without acceptable credentials, 403 without the route's role or scope."""
    target = route_key(connection)
    if target.startswith("OPTIONS "):
        return  # CORS preflight and the framework's automatic OPTIONS answers
    rule = REST.get(target)
    auth = authentication_of(connection.scope)
    subject = auth.actor.subject if auth.actor else None
    if rule is None:
        detail = f"{target} has no access rule"
        record_denial("rest", target, Reason.NO_RULE, subject, detail)
        raise AccessDenied(f"{detail}; refused until one is added")
    if rule.public:
        return
    if auth.actor is None:
        record_denial("rest", target, Reason.UNAUTHENTICATED, None, auth.refusal())
        raise Unauthenticated(auth.refusal())
    if not rule.allows(auth.actor):
        detail = f"{target} needs {rule.describe()}; {subject} has none of them"
        record_denial("rest", target, Reason.FORBIDDEN, subject, detail)
        raise AccessDenied(detail)
