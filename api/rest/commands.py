"""REST command endpoints of the meter registry under ``/api/v1/commands``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from uuid import UUID

import anyio.to_thread
from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from api.context import RequestContext
from api.presenters import present
from api.rest.bodies import (
    AssignCustomerBody,
    CommissionBody,
    ConnectionProfileBody,
    MeterView,
    ReasonBody,
    RegisterMeterBody,
)
from commands.context import CommandContext
from commands.meters import Outcome

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        description="Retrying with the same key never records the command twice.",
    ),
]
Wait = Annotated[
    bool,
    QueryParameter(name="wait", description="Answer only once the read model shows the change."),
]


async def _run(
    ctx: RequestContext, key: str | None, wait: bool, command: Callable[[CommandContext], Outcome]
) -> MeterView:
    command_ctx = ctx.command(key)
    outcome = await anyio.to_thread.run_sync(command, command_ctx)
    seconds = ctx.container.settings.api.projection_wait_seconds if wait else 0.0
    return MeterView.from_row(await present(outcome, ctx.container.meters, seconds))


class MeterCommands(Controller):
    """Meter lifecycle commands; each answers with the meter's new state."""

    path = "/api/v1/commands/meters"
    tags = ["meter commands"]

    @post("/register", status_code=201, summary="Register a meter")
    async def register(
        self,
        ctx: NamedDependency[RequestContext],
        data: JSONBody[RegisterMeterBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> MeterView:
        """Register a new meter; its serial number must be new."""
        spec = data.to_domain()
        return await _run(
            ctx, idempotency_key, wait, lambda c: ctx.container.registry.register_meter(spec, c)
        )

    @post("/{meter_id:uuid}/commission", status_code=200, summary="Commission a meter")
    async def commission(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        data: JSONBody[CommissionBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> MeterView:
        """Record the meter as installed at a location, optionally for a customer."""
        location = data.location.to_domain()
        return await _run(
            ctx,
            idempotency_key,
            wait,
            lambda c: ctx.container.registry.commission_meter(
                meter_id, location, data.customer_account, c
            ),
        )

    @post("/{meter_id:uuid}/assign-customer", status_code=200, summary="Assign a customer")
    async def assign_customer(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        data: JSONBody[AssignCustomerBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> MeterView:
        """Assign the meter to a customer account."""
        return await _run(
            ctx,
            idempotency_key,
            wait,
            lambda c: ctx.container.registry.assign_customer(meter_id, data.customer_account, c),
        )

    @post("/{meter_id:uuid}/unassign-customer", status_code=200, summary="Unassign the customer")
    async def unassign_customer(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        data: JSONBody[ReasonBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> MeterView:
        """Remove the meter's customer account."""
        return await _run(
            ctx,
            idempotency_key,
            wait,
            lambda c: ctx.container.registry.unassign_customer(meter_id, data.reason, c),
        )

    @post(
        "/{meter_id:uuid}/connection-profile",
        status_code=200,
        summary="Change the connection profile",
    )
    async def change_connection_profile(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        data: JSONBody[ConnectionProfileBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> MeterView:
        """Change how the head-end reaches the meter."""
        profile = data.connection.to_domain()
        return await _run(
            ctx,
            idempotency_key,
            wait,
            lambda c: ctx.container.registry.change_connection_profile(meter_id, profile, c),
        )

    @post("/{meter_id:uuid}/decommission", status_code=200, summary="Decommission a meter")
    async def decommission(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        data: JSONBody[ReasonBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> MeterView:
        """Take the meter out of service for good."""
        return await _run(
            ctx,
            idempotency_key,
            wait,
            lambda c: ctx.container.registry.decommission_meter(meter_id, data.reason, c),
        )
