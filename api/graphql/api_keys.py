"""GraphQL management of machine clients' API keys (admins manage, auditors may list)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, TypeAlias, TypeVar

import anyio.to_thread
import strawberry
from strawberry.types import Info

from api.context import InvalidHeader, RequestContext
from api.graphql.types import CommandError, FieldProblem, ValidationError, error_value
from commands.api_keys import IssuedKey
from commands.context import CommandContext
from domain.api_key import ApiKey as ApiKeyAggregate
from domain.errors import DomainError

ContextInfo = Info[RequestContext, None]
T = TypeVar("T")


@strawberry.type(description="A machine client's key; the secret is never shown again.")
class ApiKey:
    prefix: str = strawberry.field(description="Public part of the key: hes_<prefix>_...")
    name: str
    roles: list[str]
    scopes: list[str]
    generation: int = strawberry.field(description="1, plus one per rotation.")
    active: bool
    created_at: datetime
    created_by: str
    rotated_at: datetime | None
    rotated_by: str | None
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None

    @classmethod
    def of(cls, key: ApiKeyAggregate) -> ApiKey:
        """GraphQL view of a key (no secret, no digest)."""
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


@strawberry.type(description="A new or rotated key. `key` is shown this once: store it now.")
class IssuedApiKey:
    api_key: ApiKey
    key: str

    @classmethod
    def of(cls, issued: IssuedKey) -> IssuedApiKey:
        """GraphQL view of a freshly issued key."""
        return cls(api_key=ApiKey.of(issued.key), key=issued.secret)


@strawberry.input
class CreateApiKeyInput:
    name: str
    scopes: list[str] = strawberry.field(
        default_factory=list, description="ingest, events:read, export."
    )
    roles: list[str] = strawberry.field(
        default_factory=list, description="viewer, operator, admin, auditor (not customer)."
    )


IssueOrError: TypeAlias = IssuedApiKey | CommandError
IssueResult = Annotated[IssueOrError, strawberry.union("ApiKeyIssueResult")]
KeyOrError: TypeAlias = ApiKey | CommandError
KeyResult = Annotated[KeyOrError, strawberry.union("ApiKeyResult")]


async def _run(info: ContextInfo, command: Callable[[CommandContext], T]) -> T | CommandError:
    try:
        ctx = info.context.command(None)
    except InvalidHeader as exc:
        problem = FieldProblem(field="idempotencyKey", rule="format", message=str(exc))
        return ValidationError(message=str(exc), code="VALIDATION", fields=[problem])
    try:
        return await anyio.to_thread.run_sync(command, ctx)
    except DomainError as exc:
        return error_value(exc)


@strawberry.type
class ApiKeyQuery:
    @strawberry.field(description="Every API key, oldest first (prefixes only; no secrets).")
    async def api_keys(self, info: ContextInfo) -> list[ApiKey]:
        keys = await anyio.to_thread.run_sync(info.context.container.api_keys.all)
        return [ApiKey.of(k) for k in keys]


@strawberry.type
class ApiKeyMutation:
    @strawberry.mutation(description="Create a key for a machine client; its secret shows once.")
    async def create_api_key(self, info: ContextInfo, input: CreateApiKeyInput) -> IssueResult:
        keys = info.context.container.api_keys
        result = await _run(info, lambda c: keys.create(input.name, input.roles, input.scopes, c))
        return IssuedApiKey.of(result) if isinstance(result, IssuedKey) else result

    @strawberry.mutation(description="Give a key a new secret; the old one stops working now.")
    async def rotate_api_key(self, info: ContextInfo, prefix: str) -> IssueResult:
        keys = info.context.container.api_keys
        result = await _run(info, lambda c: keys.rotate(prefix, c))
        return IssuedApiKey.of(result) if isinstance(result, IssuedKey) else result

    @strawberry.mutation(description="Revoke a key for good; requests with it fail from now on.")
    async def revoke_api_key(self, info: ContextInfo, prefix: str, reason: str) -> KeyResult:
        keys = info.context.container.api_keys
        result = await _run(info, lambda c: keys.revoke(prefix, reason, c))
        return ApiKey.of(result) if isinstance(result, ApiKeyAggregate) else result
