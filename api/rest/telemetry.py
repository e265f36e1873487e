"""Telemetry ingest over HTTP: gateways and IP meters post reading batches."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post
from litestar.di import NamedDependency

from adapters.metrics import record_ingest_metrics
from api.context import RequestContext
from api.rest.bodies import ProblemField
from api.rest.errors import problem
from commands.context import Scope
from commands.telemetry_forms import WHOLE_REQUEST
from domain.errors import BackPressure, Forbidden
from domain.readings import Source

MAX_TELEMETRY_BYTES = 16 * 1024 * 1024


@post(
    ["/telemetry/batch", "/api/v1/telemetry/batch"],
    summary="Ingest a batch of readings",
    tags=["telemetry"],
    status_code=200,
    request_max_body_size=MAX_TELEMETRY_BYTES,
)
async def telemetry_batch(
    ctx: NamedDependency[RequestContext], request: Request[Any, Any, Any]
) -> Response[Any]:
    """Validate and publish readings; answer counts and, per rejected reading, field and rule.

    Body: the gateway form (``meter_id, timestamp, voltage, current, power_kw, energy_kwh,
    power_factor, frequency``) or the OBIS form (``meter, readings[{obis, ts, value}]``).
    Needs a token with the ``ingest`` scope. 503 means: resend the same body later.
    """
    actor = ctx.actor()
    if Scope.INGEST not in actor.scopes:
        raise Forbidden(f"telemetry ingest needs the 'ingest' scope; {actor.subject} lacks it")
    body = await request.body()
    try:
        result = await ctx.container.ingest.ingest(body, Source.HTTP)
    except BackPressure as exc:
        return problem(503, "BACK_PRESSURE", str(exc), headers={"Retry-After": "1"})
    record_ingest_metrics(result, "http")
    whole = [e for e in result.errors if e.item == WHOLE_REQUEST]
    if whole:
        status = 413 if any(e.rule == "too-many" for e in whole) else 400
        fields = [ProblemField(e.field, e.rule, e.message) for e in whole]
        return problem(status, "BAD_TELEMETRY", whole[0].message, fields)
    return Response(result, status_code=200)
