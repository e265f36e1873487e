"""``me``: who the request's credentials belong to and which doors of the API they open.

Browser clients (the operator console) use it to offer only what the caller may do; the access
table stays the guard on every call.
"""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry
from strawberry.types import Info

from api.context import RequestContext
from api.graphql.operations import GRAPHQL
from api.rest.operations import REST

ContextInfo = Info[RequestContext, None]


@strawberry.type(description="The caller of this request, as the API authenticated it.")
class Me:
    subject: str
    roles: list[str]
    scopes: list[str]
    customer_account: str | None
    credential: str = strawberry.field(description="token or apiKey.")
    api_key_prefix: str | None
    expires_at: datetime | None = strawberry.field(description="When the token expires.")
    allowed: list[str] = strawberry.field(
        description="Every non-public door these credentials open: GraphQL root fields "
        "(`Query.meters`, `Mutation.disconnectMeter`, …) and REST routes "
        "(`POST /api/v1/imports/meters`, …), as commands.access names them."
    )


@strawberry.type
class MeQuery:
    @strawberry.field(description="Who is calling, with which roles, and what they may use.")
    def me(self, info: ContextInfo) -> Me:
        auth = info.context.authentication
        actor = info.context.actor()
        doors = {**GRAPHQL, **REST}
        return Me(
            subject=actor.subject,
            roles=sorted(actor.roles),
            scopes=sorted(actor.scopes),
            customer_account=actor.customer_account,
            credential="apiKey" if auth.api_key is not None else "token",
            api_key_prefix=auth.api_key,
            expires_at=None
            if auth.expires_at is None
            else datetime.fromtimestamp(auth.expires_at, UTC),
            allowed=sorted(
                key for key, rule in doors.items() if not rule.public and rule.allows(actor)
            ),
        )
