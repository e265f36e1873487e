"""REST management of machine clients' API keys under ``/api/v1/api-keys``."""

from __future__ import annotations

from datetime import datetime

import anyio.to_thread
import msgspec
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from api.context import RequestContext
from commands.api_keys import IssuedKey
from domain.api_key import ApiKey

NO_STORE = {"Cache-Control": "no-store"}


class CreateApiKeyBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A key to create: a name, and the scopes and/or roles it grants."""

    name: str
    scopes: list[str] = []
    roles: list[str] = []


class RevokeBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Why the key is revoked."""

    reason: str


class ApiKeyView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A key as listed: public prefix, grants and history; never the secret or its digest."""

    prefix: str
    name: str
    roles: list[str]
    scopes: list[str]
    generation: int
    active: bool
    created_at: datetime
    created_by: str
    rotated_at: datetime | None
    rotated_by: str | None
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyView:
        """API view of a key."""
        return cls(
            prefix=key.prefix,
            name=key.name,
            roles=list(key.roles),
            scopes=list(key.scopes),
            generation=key.generation,
            active=key.active,
            created_at=key.created_on,
            created_by=key.created_by,
            rotated_at=key.rotated_at,
            rotated_by=key.rotated_by,
            revoked_at=key.revoked_at,
            revoked_by=key.revoked_by,
            revoke_reason=key.revoke_reason,
        )


class IssuedKeyView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A new or rotated key: ``key`` is shown this once."""

    key: str
    api_key: ApiKeyView

    @classmethod
    def of(cls, issued: IssuedKey) -> IssuedKeyView:
        """API view of a freshly issued key."""
        return cls(key=issued.secret, api_key=ApiKeyView.of(issued.key))


class ApiKeys(Controller):
    """Create, list, rotate and revoke API keys (administrators; auditors may list)."""

    path = "/api/v1/api-keys"
    tags = ["api keys"]

    @get("", summary="List API keys")
    async def list_keys(self, ctx: NamedDependency[RequestContext]) -> list[ApiKeyView]:
        """Every key, oldest first, with its prefix and status (never a secret)."""
        keys = await anyio.to_thread.run_sync(ctx.container.api_keys.all)
        return [ApiKeyView.of(k) for k in keys]

    @post("", status_code=201, summary="Create an API key")
    async def create(
        self, ctx: NamedDependency[RequestContext], data: JSONBody[CreateApiKeyBody]
    ) -> Response[IssuedKeyView]:
        """Create a key; the answer holds its secret, which is not shown again."""
        command_ctx = ctx.command(None)
        keys = ctx.container.api_keys
        issued = await anyio.to_thread.run_sync(
            lambda: keys.create(data.name, data.roles, data.scopes, command_ctx)
        )
        return Response(IssuedKeyView.of(issued), status_code=201, headers=NO_STORE)

    @post("/{prefix:str}/rotate", status_code=200, summary="Rotate an API key")
    async def rotate(
        self, ctx: NamedDependency[RequestContext], prefix: FromPath[str]
    ) -> Response[IssuedKeyView]:
        """Give the key a new secret (in the answer); the previous secret stops working now."""
        command_ctx = ctx.command(None)
        keys = ctx.container.api_keys
        issued = await anyio.to_thread.run_sync(lambda: keys.rotate(prefix, command_ctx))
        return Response(IssuedKeyView.of(issued), headers=NO_STORE)

    @post("/{prefix:str}/revoke", status_code=200, summary="Revoke an API key")
    async def revoke(
        self,
        ctx: NamedDependency[RequestContext],
        prefix: FromPath[str],
        data: JSONBody[RevokeBody],
    ) -> ApiKeyView:
        """Revoke the key for good; requests with it are refused from the next one on."""
        command_ctx = ctx.command(None)
        keys = ctx.container.api_keys
        key = await anyio.to_thread.run_sync(lambda: keys.revoke(prefix, data.reason, command_ctx))
        return ApiKeyView.of(key)
