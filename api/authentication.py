"""Who is calling: bearer tokens and API keys resolved once per request, before rate limiting.

The middleware never refuses a request by itself: it records the caller (or why the given
credentials were not accepted) in the connection state. Guards (REST) and the GraphQL access
extension decide, per route or field, whether that is enough, so public routes keep working
with a bad or missing credential and protected ones answer 401 or 403 consistently.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar.datastructures import Headers
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from api.auth import TokenService, Unauthenticated
from commands.api_keys import ApiKeyRegistry, actor_of
from commands.context import Actor
from domain.errors import NotFound

STATE_KEY = "hes_authentication"
MISSING = "missing credentials: send 'Authorization: Bearer <token>' or 'X-API-Key: <key>'"
_MAX_CREDENTIAL = 8192


class Authentication(msgspec.Struct, frozen=True, kw_only=True):
    """The caller of a request, or why its credentials were refused (both None: anonymous)."""

    actor: Actor | None = None
    error: str | None = None
    expires_at: float | None = None
    """Expiry of the bearer token (epoch seconds)."""
    api_key: str | None = None
    """Prefix of the API key used (public; the secret is never kept)."""
    secret_id: UUID | None = None

    def refusal(self) -> str:
        """Why this caller counts as unauthenticated."""
        return self.error or MISSING


ANONYMOUS = Authentication()


class Authenticator:
    """Turns request credentials into an ``Authentication``; checks long-lived ones again."""

    def __init__(self, tokens: TokenService, keys: ApiKeyRegistry) -> None:
        self.tokens = tokens
        self.keys = keys

    async def from_headers(self, headers: Mapping[str, str]) -> Authentication:
        """The caller named by ``Authorization`` or ``X-API-Key``."""
        return await self.from_credentials(headers.get("authorization"), headers.get("x-api-key"))

    async def from_credentials(
        self, authorization: str | None, api_key: str | None
    ) -> Authentication:
        """The caller of an ``Authorization`` value (Bearer or ApiKey) or an ``X-API-Key`` value."""
        if authorization and api_key:
            return Authentication(error="send one credential: Authorization or X-API-Key")
        if api_key is not None:
            return await self._key(api_key.strip())
        if not authorization:
            return ANONYMOUS
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if not value or scheme.lower() not in ("bearer", "apikey"):
            return Authentication(
                error="Authorization header must be 'Bearer <token>' or 'ApiKey <key>'"
            )
        if scheme.lower() == "apikey" or value.startswith("hes_"):
            return await self._key(value)
        return await self._token(value)

    async def still_valid(self, auth: Authentication) -> bool:
        """True while the token has not expired and the key is neither revoked nor rotated."""
        if auth.actor is None:
            return False
        if auth.expires_at is not None and time.time() >= auth.expires_at:
            return False
        if auth.api_key is None:
            return True
        try:
            key = await anyio.to_thread.run_sync(self.keys.get, auth.api_key)
        except NotFound:
            return False
        return key.active and key.secret_id == auth.secret_id

    async def _token(self, token: str) -> Authentication:
        if len(token) > _MAX_CREDENTIAL:
            return Authentication(error="token is too long")
        try:
            if self.tokens.blocking(token):
                verified = await anyio.to_thread.run_sync(self.tokens.verify_token, token)
            else:
                verified = self.tokens.verify_token(token)
        except Unauthenticated as exc:
            return Authentication(error=str(exc))
        return Authentication(actor=verified.actor, expires_at=verified.expires_at)

    async def _key(self, presented: str) -> Authentication:
        found = None
        if len(presented) <= 200:
            found = await anyio.to_thread.run_sync(self.keys.authenticate, presented)
        if found is None:
            return Authentication(
                error="API key is not valid (unknown, revoked, rotated or mistyped)"
            )
        return Authentication(
            actor=actor_of(found), api_key=found.prefix, secret_id=found.secret_id
        )


def authentication_of(scope: Scope) -> Authentication:
    """The authentication the middleware recorded for this connection (anonymous if none)."""
    state: dict[str, Any] = scope.get("state") or {}
    found = state.get(STATE_KEY)
    return found if isinstance(found, Authentication) else ANONYMOUS


class AuthenticationMiddleware(ASGIMiddleware):
    """Resolves the caller of every HTTP request and websocket handshake, refusing nothing."""

    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Record the caller in the connection state, then continue."""
        authenticator: Authenticator = scope["litestar_app"].state.authenticator
        auth = await authenticator.from_headers(Headers.from_scope(scope))
        scope.setdefault("state", {})[STATE_KEY] = auth  # type: ignore[typeddict-item]
        await next_app(scope, receive, send)
