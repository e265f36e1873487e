"""GraphQL access control: every root field checked against ``api.graphql.operations``.

``protect(Query, Mutation, Subscription)`` puts the ``AccessControl`` field extension (driven by
the ``Allowed`` permission) in front of every root field when the schema is built, so a new
query, mutation or subscription only needs its line in the mapping (and its operation's in
``commands.access``). Refusals:

* no acceptable credentials → error with ``extensions.code = UNAUTHENTICATED``;
* authenticated without the field's role or scope → ``FORBIDDEN``: a ``ForbiddenError`` value
  for mutations whose result union has one, an error with that code otherwise.

Subscriptions check again while they stream: once the token expires or the API key is revoked
or rotated, the stream ends with an ``UNAUTHENTICATED`` error at its next event.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from graphql import GraphQLError
from strawberry.extensions import FieldExtension
from strawberry.permission import BasePermission
from strawberry.types import ExecutionContext, Info
from strawberry.types.base import StrawberryOptional
from strawberry.types.field import StrawberryField
from strawberry.types.union import StrawberryUnion

from api.context import RequestContext
from api.denials import Reason, record_denial
from api.graphql.operations import FIELDS, GRAPHQL
from api.graphql.types import ForbiddenError
from domain.values import camel as _camel

ContextInfo = Info[RequestContext, None]
RECHECK_SECONDS = 30.0
"""How often a live subscription checks that its API key is still valid."""


class Refusal(msgspec.Struct, frozen=True):
    """Why a field was refused: ``UNAUTHENTICATED`` or ``FORBIDDEN``, and a message."""

    code: str
    message: str

    def error(self) -> GraphQLError:
        """The GraphQL error carrying this refusal's code (marked as already recorded)."""
        error = GraphQLError(self.message, extensions={"code": self.code})
        error.hes_recorded = True  # type: ignore[attr-defined]
        return error


def field_key(info: ContextInfo) -> str:
    """``<Operation type>.<field>`` of the field being resolved."""
    return f"{info.path.typename}.{info.field_name}"


def refusal_for(info: ContextInfo) -> Refusal | None:
    """None when the caller may use this root field; else why not (logged and counted)."""
    key = field_key(info)
    rule = GRAPHQL.get(key)
    auth = info.context.authentication
    subject = auth.actor.subject if auth.actor else None
    if rule is None:
        message = f"{key} has no access rule; refused until one is added"
        record_denial("graphql", key, Reason.NO_RULE, subject, message)
        return Refusal("FORBIDDEN", message)
    if rule.public:
        return None
    if auth.actor is None:
        record_denial("graphql", key, Reason.UNAUTHENTICATED, None, auth.refusal())
        return Refusal("UNAUTHENTICATED", f"authentication required: {auth.refusal()}")
    if not rule.allows(auth.actor):
        message = f"{info.field_name} needs {rule.describe()}; {subject} has none of them"
        record_denial("graphql", key, Reason.FORBIDDEN, subject, message)
        return Refusal("FORBIDDEN", message)
    return None


class Allowed(BasePermission):
    """The caller holds a role or scope the access table lists for this root field."""

    def has_permission(self, source: Any, info: ContextInfo, **kwargs: Any) -> bool:
        """True when allowed; raises the UNAUTHENTICATED or FORBIDDEN error otherwise."""
        refusal = refusal_for(info)
        if refusal is not None:
            raise refusal.error()
        return True


def _has_typed_forbidden(type_: Any) -> bool:
    while isinstance(type_, StrawberryOptional):
        type_ = type_.of_type
    if not isinstance(type_, StrawberryUnion):
        return False
    members: tuple[object, ...] = tuple(type_.types)
    return ForbiddenError in members


class AccessControl(FieldExtension):
    """Runs ``Allowed`` before the resolver; answers typed ``ForbiddenError`` where possible."""

    def __init__(self) -> None:
        self.permission = Allowed()
        self.typed_forbidden = False

    def apply(self, field: StrawberryField) -> None:
        """Note whether the field's result union can carry a ``ForbiddenError``."""
        self.typed_forbidden = _has_typed_forbidden(field.type)

    def _refuse(self, refusal: Refusal) -> ForbiddenError:
        if refusal.code == "FORBIDDEN" and self.typed_forbidden:
            return ForbiddenError(message=refusal.message, code=refusal.code)
        raise refusal.error()

    def resolve(
        self, next_: Callable[..., Any], source: Any, info: ContextInfo, **kwargs: Any
    ) -> Any:
        """Check, then resolve (sync fields)."""
        refusal = refusal_for(info)
        if refusal is not None:
            return self._refuse(refusal)
        return next_(source, info, **kwargs)

    async def resolve_async(
        self,
        next_: Callable[..., Awaitable[Any] | AsyncGenerator[Any, None]],
        source: Any,
        info: ContextInfo,
        **kwargs: Any,
    ) -> Any:
        """Check, then resolve; wrap subscription streams in a validity check."""
        refusal = refusal_for(info)
        if refusal is not None:
            return self._refuse(refusal)
        result = next_(source, info, **kwargs)
        if inspect.isasyncgen(result):
            return _while_valid(result, info)
        return await result  # type: ignore[misc]


async def _while_valid(stream: AsyncGenerator[Any, Any], info: ContextInfo) -> AsyncIterator[Any]:
    context = info.context
    auth = context.authentication
    next_check = time.monotonic() + RECHECK_SECONDS
    try:
        async for item in stream:
            expired = auth.expires_at is not None and time.time() >= auth.expires_at
            if not expired and auth.api_key is not None and time.monotonic() >= next_check:
                assert context.authenticator is not None
                expired = not await context.authenticator.still_valid(auth)
                next_check = time.monotonic() + RECHECK_SECONDS
            if expired:
                key = field_key(info)
                subject = auth.actor.subject if auth.actor else None
                message = "credentials expired or were revoked; reconnect with valid ones"
                record_denial("graphql", key, Reason.UNAUTHENTICATED, subject, message)
                raise Refusal("UNAUTHENTICATED", message).error()
            yield item
    finally:
        await stream.aclose()


def record_refusal(error: GraphQLError, execution: ExecutionContext | None) -> None:
    """Log and count a refusal a resolver raised itself (the access layer records its own)."""
    code = (error.extensions or {}).get("code")
    if code not in ("FORBIDDEN", "UNAUTHENTICATED"):
        return
    if getattr(error, "hes_recorded", False) or getattr(
        error.original_error, "hes_recorded", False
    ):
        return
    try:
        operation = execution.operation_type.value.title() if execution else "Operation"
    except RuntimeError:  # no operation to name (the document did not parse)
        operation = "Operation"
    reason = Reason.FORBIDDEN if code == "FORBIDDEN" else Reason.UNAUTHENTICATED
    # the target names the operation type only: response keys (aliases) are caller input
    record_denial("graphql", f"{operation}.<resolver>", reason, None, error.message)


class FieldAccess(FieldExtension):
    """Resolves a ``api.graphql.operations.FIELDS`` field only for callers its rule allows.

    Others get null for the field and a ``FORBIDDEN`` error naming it; the rest of the answer
    is unaffected (the field is nullable for that reason).
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.rule = FIELDS[key]

    def _check(self, info: ContextInfo) -> None:
        actor = info.context.authentication.actor
        if actor is not None and self.rule.allows(actor):
            return
        message = f"{self.key} needs {self.rule.describe()}"
        record_denial(
            "graphql", self.key, Reason.FORBIDDEN, actor.subject if actor else None, message
        )
        raise Refusal("FORBIDDEN", message).error()

    def resolve(
        self, next_: Callable[..., Any], source: Any, info: ContextInfo, **kwargs: Any
    ) -> Any:
        """Check, then resolve."""
        self._check(info)
        return next_(source, info, **kwargs)

    async def resolve_async(
        self, next_: Callable[..., Awaitable[Any]], source: Any, info: ContextInfo, **kwargs: Any
    ) -> Any:
        """Check, then resolve (async fields)."""
        self._check(info)
        return await next_(source, info, **kwargs)


def protect_fields(*types: type) -> None:
    """Put ``FieldAccess`` on every field of ``types`` that ``api.graphql.operations`` guards."""
    for type_ in types:
        definition = type_.__strawberry_definition__  # type: ignore[attr-defined]
        for field in definition.fields:
            key = f"{definition.name}.{field.graphql_name or _camel(field.python_name)}"
            if key in FIELDS and not any(isinstance(e, FieldAccess) for e in field.extensions):
                field.extensions.append(FieldAccess(key))


def protect(*root_types: type) -> None:
    """Put ``AccessControl`` in front of every field of the given root types (once)."""
    for root in root_types:
        for field in root.__strawberry_definition__.fields:  # type: ignore[attr-defined]
            if not any(isinstance(e, AccessControl) for e in field.extensions):
                # strawberry wraps extensions in list order: the last one runs first
                field.extensions.append(AccessControl())
