"""The error answers of every REST operation in the OpenAPI document, as the API gives them.

Litestar documents a generic 400 body (``status_code, detail, extra``) that this API never
sends: every error is an RFC 9457 problem (``api/rest/errors.py``). This replaces it, and adds
the statuses each operation can answer with — derived from the same facts that cause them: the
access table (401/403), the rate limit (429), request bodies and parameters (400, 413), path
parameters (404), commands (409, 422) — plus the few operation-specific ones.
``tests/integration/test_fuzzing.py`` fails when the API answers a status its operation does not
document.
"""

from __future__ import annotations

from typing import Any

from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
)

from api.rest.errors import CHALLENGE, PROBLEM
from api.rest.operations import REST
from commands.access import Access

PROBLEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    description="RFC 9457 problem details with the HES error code and the fields at fault.",
    required=["type", "title", "status", "detail", "code"],
    properties={
        "type": Schema(type=OpenAPIType.STRING, examples=["urn:hes:error:validation"]),
        "title": Schema(type=OpenAPIType.STRING, examples=["Validation"]),
        "status": Schema(type=OpenAPIType.INTEGER, examples=[422]),
        "detail": Schema(type=OpenAPIType.STRING),
        "code": Schema(
            type=OpenAPIType.STRING,
            description="Machine-readable reason, e.g. VALIDATION, NOT_FOUND, RATE_LIMITED.",
        ),
        "errors": Schema(
            type=OpenAPIType.ARRAY,
            description="Every field at fault (omitted when empty).",
            items=Schema(
                type=OpenAPIType.OBJECT,
                required=["field", "rule", "message"],
                properties={
                    "field": Schema(type=OpenAPIType.STRING),
                    "rule": Schema(type=OpenAPIType.STRING),
                    "message": Schema(type=OpenAPIType.STRING),
                },
            ),
        ),
    },
)

DESCRIPTIONS = {
    400: "BAD_REQUEST: a body field or parameter does not decode (errors[] names it); "
    "BAD_HEADER: a malformed Idempotency-Key",
    401: "UNAUTHENTICATED: no credentials, or a token or API key that does not verify",
    403: "FORBIDDEN: the caller's roles or scopes do not open this operation",
    404: "NOT_FOUND: no such meter, key or command; NO_ROUTE: a path id that is not a UUID",
    409: "CONFLICT: a lifecycle contradiction, an idempotency key reused with other arguments, "
    "or a change racing another",
    413: "TOO_LARGE: the body exceeds the operation's limit",
    422: "VALIDATION: field rules broken; errors[] lists every one",
    429: "RATE_LIMITED: the caller's requests per minute (RateLimit-* headers), or the actor's "
    "hourly dangerous commands",
    500: "INTERNAL: an unexpected failure (no details; the server log has them)",
    503: "BACK_PRESSURE: JetStream did not acknowledge in time; resend the same body later",
}

SPECIFIC: dict[str, set[int]] = {
    "POST /telemetry/batch": {400, 413, 503},
    "POST /api/v1/telemetry/batch": {400, 413, 503},
    "POST /graphql": {413},
}
"""Statuses of operations whose handler answers them itself (not from the general rules)."""
NO_COMMAND_ERRORS = {
    "POST /telemetry/batch",
    "POST /api/v1/telemetry/batch",
    "POST /api/v1/imports/meters",  # bad rows are reported in the 200 answer
}
UNLIMITED = ("/health", "/schema", "/metrics")
"""Path prefixes the rate limit skips."""


def document_errors(openapi: OpenAPI, access: dict[str, Access] = REST) -> None:
    """Give every operation the problem responses it can answer; drop Litestar's generic 400."""
    components = openapi.components
    if not isinstance(components.schemas, dict):
        components.schemas = {}
    components.schemas["Problem"] = PROBLEM_SCHEMA
    for path, item in (openapi.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(item, method, None)
            if operation is not None:
                _document(operation, f"{method.upper()} {path}", path, access)


def statuses(key: str, path: str, operation: Operation, access: dict[str, Access]) -> set[int]:
    """The error statuses operation ``key`` (``METHOD /path``) can answer with."""
    method = key.split(" ", 1)[0]
    grant = access.get(key)
    public = grant is not None and grant.public
    found = {500} | SPECIFIC.get(key, set())
    if not public:
        found |= {401, 403}
    if key == "GET /metrics":
        found |= {401}  # only with HES_METRICS_TOKEN set
    if not path.startswith(UNLIMITED):
        found |= {429}
    parameters = [p for p in operation.parameters or [] if getattr(p, "param_in", "") != "path"]
    if operation.request_body is not None or parameters:
        found |= {400}
    if operation.request_body is not None:
        found |= {413}
    if "{" in path:
        found |= {404}
    if method in ("POST", "PUT") and not public and key not in NO_COMMAND_ERRORS:
        found |= {400, 409, 422}  # commands take Idempotency-Key and run domain rules
    return found


def _document(operation: Operation, key: str, path: str, access: dict[str, Access]) -> None:
    responses: dict[str, Any] = {
        status: answer
        for status, answer in (operation.responses or {}).items()
        if not _framework_error(answer)  # Litestar's generic error body: never sent
    }
    for status in sorted(statuses(key, path, operation, access)):
        if str(status) in responses:
            continue  # documented by the handler itself (e.g. the readiness probe's 503)
        responses[str(status)] = _problem_response(status)
    if key in ("GET /graphql", "POST /graphql"):
        # strawberry answers a request it cannot read as GraphQL over HTTP in plain text;
        # GraphQL's own errors come with 200 in the result's "errors".
        responses["400"] = OpenAPIResponse(
            description="Not a GraphQL request (content type, JSON, or no query), in plain text",
            content={"text/plain": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))},
        )
    if key == "GET /health/ready" and "200" in responses:
        ready = responses["200"]
        responses["503"] = OpenAPIResponse(
            description="Not ready: a check failed (each check says why)",
            content=ready.content if isinstance(ready, OpenAPIResponse) else None,
        )
    operation.responses = responses


def _framework_error(answer: object) -> bool:
    """True for Litestar's default error body (``status_code, detail, extra``)."""
    if not isinstance(answer, OpenAPIResponse):
        return False
    for media in (answer.content or {}).values():
        schema = media.schema
        if isinstance(schema, Schema) and "status_code" in (schema.properties or {}):
            return True
    return False


def _problem_response(status: int) -> OpenAPIResponse:
    headers: dict[str, OpenAPIHeader | Reference] = {}
    if status == 401:
        headers["WWW-Authenticate"] = OpenAPIHeader(
            schema=Schema(type=OpenAPIType.STRING, examples=[CHALLENGE])
        )
    if status in (429, 503):
        headers["Retry-After"] = OpenAPIHeader(schema=Schema(type=OpenAPIType.INTEGER))
    return OpenAPIResponse(
        description=DESCRIPTIONS[status],
        content={PROBLEM: OpenAPIMediaType(schema=Reference("#/components/schemas/Problem"))},
        headers=headers or None,
    )
