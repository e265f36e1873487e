"""Per-request context shared by GraphQL and REST: container, actor, correlation id."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from strawberry.litestar import BaseContext

from api.auth import TokenService, Unauthenticated
from api.authentication import ANONYMOUS, Authentication, Authenticator
from api.dangerous import DangerousCommands
from api.services import Services
from commands.context import Actor, CommandContext

_CORRELATION_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_IDEMPOTENCY_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class InvalidHeader(ValueError):
    """A request header has a value the API cannot use."""


def correlation_id(headers: Mapping[str, str]) -> str:
    """The caller's ``X-Correlation-ID`` if well-formed, else a new one."""
    given = headers.get("x-correlation-id")
    return given if given and _CORRELATION_RE.fullmatch(given) else str(uuid.uuid4())


def check_idempotency_key(key: str | None) -> str | None:
    """Return the key if well-formed; raise ``InvalidHeader`` otherwise."""
    if key is not None and not _IDEMPOTENCY_RE.fullmatch(key):
        raise InvalidHeader("idempotency key must be 1..128 letters, digits, '.', '_', ':' or '-'")
    return key


class RequestContext(BaseContext, kw_only=True):
    """What a resolver or handler needs to know about the request it serves."""

    container: Services
    tokens: TokenService
    authorization: str | None
    correlation_id: str
    authentication: Authentication = ANONYMOUS
    """The caller, resolved once per request (per connection for websockets)."""
    authenticator: Authenticator | None = None
    dangerous: DangerousCommands | None = None
    connection_params: dict[str, Any] | None = None
    """The graphql-transport-ws ``connection_init`` payload (set by strawberry)."""

    def actor(self) -> Actor:
        """The authenticated caller; raises ``Unauthenticated`` with the reason."""
        if self.authentication.actor is None:
            raise Unauthenticated(self.authentication.refusal())
        return self.authentication.actor

    def try_actor(self) -> Actor | None:
        """The authenticated caller, or None."""
        try:
            return self.actor()
        except Unauthenticated:
            return None

    def command(self, idempotency_key: str | None) -> CommandContext:
        """Command context for the caller with this request's ids."""
        return CommandContext(
            actor=self.actor(),
            correlation_id=self.correlation_id,
            idempotency_key=check_idempotency_key(idempotency_key),
        )
