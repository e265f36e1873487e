"""Maps refusals to RFC 9457 problem responses with specific codes and fields."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from api.auth import Unauthenticated
from api.authentication import authentication_of
from api.context import InvalidHeader
from api.denials import Reason, record_denial
from api.rest.bodies import Problem, ProblemField
from domain.errors import DomainError, ValidationFailed

log = logging.getLogger(__name__)
_STATUS = {
    "VALIDATION": 422,
    "NOT_FOUND": 404,
    "CONFLICT": 409,
    "FORBIDDEN": 403,
    "RATE_LIMITED": 429,
}
CHALLENGE = 'Bearer realm="hes", ApiKey realm="hes"'

PROBLEM = "application/problem+json"
MAX_NESTING_HINT = "about 1,000"
"""How deep the JSON decoders (msgspec, json) and the GraphQL parser go: Python's recursion
limit, reached as ``RecursionError`` long before memory or time run short."""


def problem(
    status: int,
    code: str,
    detail: str,
    errors: list[ProblemField] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Problem]:
    """A problem-details response."""
    body = Problem(
        type=f"urn:hes:error:{code.lower()}",
        title=code.replace("_", " ").capitalize(),
        status=status,
        detail=detail,
        code=code,
        errors=errors or [],
    )
    return Response(body, status_code=status, media_type=PROBLEM, headers=headers)


def domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[Problem]:
    """422/404/409/403 for a refused command."""
    if exc.code == "FORBIDDEN" and not getattr(exc, "recorded", False):
        # refused by a handler or a command (the guard records its own refusals)
        auth = authentication_of(request.scope)
        target = f"{request.method} {request.scope.get('path_template', '?')}"
        subject = auth.actor.subject if auth.actor else None
        record_denial("rest", target, Reason.FORBIDDEN, subject, exc.message)
    fields = (
        [ProblemField(e.field, e.rule, e.message) for e in exc.errors]
        if isinstance(exc, ValidationFailed)
        else None
    )
    return problem(_STATUS.get(exc.code, 409), exc.code, exc.message, fields)


def unauthenticated(_: Request[Any, Any, Any], exc: Unauthenticated) -> Response[Problem]:
    """401 with the reason and the schemes to use."""
    return problem(401, "UNAUTHENTICATED", str(exc), headers={"WWW-Authenticate": CHALLENGE})


def invalid_header(_: Request[Any, Any, Any], exc: InvalidHeader) -> Response[Problem]:
    """400 for a malformed header such as Idempotency-Key."""
    return problem(400, "BAD_HEADER", str(exc))


def request_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Problem]:
    """400 naming the body field or parameter that did not decode."""
    fields = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            key = str(item.get("key") or item.get("source") or "body")
            fields.append(ProblemField(key, "type", str(item.get("message", ""))))
    return problem(400, "BAD_REQUEST", exc.detail, fields)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    """Other framework errors (404 route, 405, 413...) in the same problem format."""
    code = {404: "NO_ROUTE", 405: "METHOD_NOT_ALLOWED", 413: "TOO_LARGE", 429: "RATE_LIMITED"}.get(
        exc.status_code, "HTTP_ERROR"
    )
    if exc.status_code == 429:
        auth = authentication_of(request.scope)
        target = f"{request.method} {request.scope.get('path_template', '?')}"
        subject = auth.actor.subject if auth.actor else None
        record_denial("rest", target, Reason.RATE_LIMITED, subject, "request rate limit reached")
    return problem(exc.status_code, code, exc.detail, headers=exc.headers)


def too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Problem]:
    """400 for input nested deeper than the parsers go (JSON bodies, GraphQL documents)."""
    log.warning(
        "refused %s %s: input nested too deeply (%s)", request.method, request.url.path, exc
    )
    return problem(
        400,
        "TOO_DEEP",
        f"the request is nested more deeply than the {MAX_NESTING_HINT} levels the API reads",
        [ProblemField("body", "nesting", "nested too deeply")],
    )


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    """500 without internals; the log has the traceback under the correlation id."""
    correlation = request.headers.get("x-correlation-id", "-")
    log.error(
        "unhandled error on %s %s [%s]", request.method, request.url.path, correlation, exc_info=exc
    )
    return problem(500, "INTERNAL", "internal error; the server log has the details")


HANDLERS: ExceptionHandlersMap = {
    Exception: internal_error,
    DomainError: domain_error,
    Unauthenticated: unauthenticated,
    InvalidHeader: invalid_header,
    ValidationException: request_validation,
    HTTPException: http_error,
    RecursionError: too_deep,
}
