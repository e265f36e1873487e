"""The GraphQL endpoint: HTTP and graphql-transport-ws, authenticating websockets on connect.

A websocket client authenticates with the handshake's ``Authorization``/``X-API-Key`` header or
with the ``connection_init`` payload ``{"Authorization": "Bearer <token>"}`` (or
``{"X-API-Key": "<key>"}``, or ``ApiKey <key>`` as Authorization). Without acceptable credentials
the server closes the socket with 4401; a caller whose roles allow no subscription at all gets
4403. Each subscription is then checked like any field (``api.graphql.operations.GRAPHQL``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from litestar import Request, Response
from strawberry.exceptions import ConnectionRejectionError
from strawberry.litestar import make_graphql_controller
from strawberry.litestar.controller import GraphQLController
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UnsetType

from api.context import RequestContext
from api.denials import Reason, record_denial
from api.deps import graphql_context
from api.graphql.operations import GRAPHQL
from api.graphql.schema import schema
from api.web.pages import html_page

TARGET = "WS /graphql"


def _param(params: Mapping[str, Any], name: str) -> str | None:
    for key, value in params.items():
        if key.lower() == name and isinstance(value, str):
            return value
    return None


def may_subscribe(context: RequestContext) -> bool:
    """True when the caller's grants open at least one subscription field."""
    actor = context.authentication.actor
    return actor is not None and any(
        rule.allows(actor) for key, rule in GRAPHQL.items() if key.startswith("Subscription.")
    )


def graphql_controller(allowed_origins: Sequence[str]) -> type[GraphQLController]:
    """The GraphQL controller class, accepting websocket handshakes from ``allowed_origins``."""
    base = make_graphql_controller(
        schema,
        path="/graphql",
        graphql_ide="graphiql",
        context_getter=graphql_context,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        connection_init_wait_timeout=timedelta(seconds=10),
        max_subscriptions_per_connection=20,
        allowed_origins=allowed_origins,
    )

    class HesGraphQL(base):  # type: ignore[valid-type,misc]
        async def render_graphql_ide(self, request: Request[Any, Any, Any]) -> Response[str]:
            """GraphiQL from the API's own files (strawberry's page loads it from a CDN)."""
            return html_page("graphiql/index.html")

        async def on_ws_connect(
            self, context: RequestContext
        ) -> UnsetType | dict[str, object] | None:
            """Authenticate from the connection_init payload (else the handshake headers)."""
            params = context.connection_params or {}
            authorization, api_key = _param(params, "authorization"), _param(params, "x-api-key")
            if (authorization or api_key) and context.authenticator is not None:
                context.authentication = await context.authenticator.from_credentials(
                    authorization, api_key
                )
            auth = context.authentication
            if auth.actor is None:
                record_denial("websocket", TARGET, Reason.UNAUTHENTICATED, None, auth.refusal())
                assert context.websocket is not None
                await context.websocket.close(code=4401, reason="Unauthorized")
                raise ConnectionRejectionError()
            if not may_subscribe(context):
                detail = f"{auth.actor.subject} may not use any subscription"
                record_denial("websocket", TARGET, Reason.FORBIDDEN, auth.actor.subject, detail)
                raise ConnectionRejectionError()  # strawberry closes with 4403 Forbidden
            return None

    return HesGraphQL
