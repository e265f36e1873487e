"""REST SIM inventory: queries under ``/api/v1/sims``, commands under ``/api/v1/commands/sims``,
and the CSV template and import."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated

import anyio.to_thread
import msgspec
from litestar import Controller, Response, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import FromPath, JSONBody, MultipartBody, QueryParameter

from api.context import RequestContext
from api.rest.commands import IdempotencyKey, Wait
from api.rest.imports import MAX_IMPORT_BYTES
from commands.context import CommandContext
from commands.sim_csv import template_csv
from commands.sim_import import SimImportReport, import_sims
from commands.sims import SimInventory, SimOutcome
from domain.errors import NotFound
from domain.sim_card import SimCard
from domain.sim_rules import SimSpec, SimStatus
from projections.sims_queries import InvalidSimCursor, SimCount, SimFilter, SimRow


class SimView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A SIM card and the meter it sits in (``meterSerial``, null when none)."""

    iccid: str
    sim_number: str | None
    imsi: str | None
    msisdn: str | None
    provider: str
    status: SimStatus
    ip_address: str | None
    apn: str | None
    data_limit: int | None
    """Monthly data limit in MB."""
    activation_date: date | None
    meter_serial: str | None
    added_at: datetime
    updated_at: datetime
    version: int

    @classmethod
    def from_row(cls, row: SimRow) -> SimView:
        """API view of a read-model row."""
        fields = msgspec.structs.asdict(row)
        fields["data_limit"] = fields.pop("data_limit_mb")
        return cls(**fields)

    @classmethod
    def from_aggregate(cls, card: SimCard) -> SimView:
        """API view of the card as the command left it."""
        return cls(
            iccid=card.iccid,
            sim_number=card.spec.sim_number,
            imsi=card.spec.imsi,
            msisdn=card.spec.msisdn,
            provider=card.provider,
            status=card.status,
            ip_address=card.ip_address,
            apn=card.apn,
            data_limit=card.data_limit_mb,
            activation_date=card.activation_date,
            meter_serial=card.meter_serial,
            added_at=card.created_on,
            updated_at=card.modified_on,
            version=card.version,
        )


class SimPageView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A page of cards ordered by ICCID; pass ``endCursor`` as ``after`` for the next."""

    items: list[SimView]
    has_next_page: bool
    end_cursor: str | None


class AddSimBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A SIM card entering the stock."""

    iccid: str
    provider: str
    sim_number: str | None = None
    imsi: str | None = None
    msisdn: str | None = None
    apn: str | None = None
    ip_address: str | None = None
    data_limit: int | None = None
    activation_date: date | None = None


class UpdateSimBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Service fields to change; an absent or null field keeps its value."""

    provider: str | None = None
    apn: str | None = None
    ip_address: str | None = None
    data_limit: int | None = None


class ActivateSimBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The activation date (default: the one recorded, else today)."""

    activation_date: date | None = None


class SimReasonBody(msgspec.Struct, frozen=True, kw_only=True):
    """Why the card is suspended or terminated."""

    reason: str


class InstallSimBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The meter to put the card into."""

    meter_serial: str


class RemoveSimBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The meter to take its card out of, and why."""

    meter_serial: str
    reason: str


@dataclass
class SimImportForm:
    """The multipart form of an import: the CSV file in the part named ``data``."""

    data: UploadFile


async def _run(
    ctx: RequestContext,
    key: str | None,
    wait: bool,
    command: Callable[[SimInventory, CommandContext], SimOutcome],
) -> SimView:
    command_ctx = ctx.command(key)
    inventory = ctx.container.sims
    outcome = await anyio.to_thread.run_sync(lambda: command(inventory, command_ctx))
    if outcome.notification_id is not None and wait:
        seconds = ctx.container.settings.api.projection_wait_seconds
        await ctx.container.sim_queries.wait_for(outcome.notification_id, seconds)
    return SimView.from_aggregate(outcome.sim)


class SimQueriesApi(Controller):
    """The SIM inventory as the read model shows it."""

    tags = ["SIM cards"]

    @get("/api/v1/sims", summary="List SIM cards")
    async def list_sims(
        self,
        ctx: NamedDependency[RequestContext],
        provider: Annotated[str | None, QueryParameter(required=False)] = None,
        status: Annotated[SimStatus | None, QueryParameter(required=False)] = None,
        installed: Annotated[
            bool | None,
            QueryParameter(required=False, description="true: in a meter; false: in none"),
        ] = None,
        first: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        after: Annotated[str | None, QueryParameter(required=False)] = None,
    ) -> SimPageView:
        """Cards matching the filters, ordered by ICCID, ``first`` at a time (max 500)."""
        try:
            page = await ctx.container.sim_queries.page(
                SimFilter(provider=provider, status=status, installed=installed), first, after
            )
        except InvalidSimCursor as exc:  # a malformed parameter: 400, like any other
            raise ValidationException(
                str(exc), extra=[{"key": "after", "message": str(exc)}]
            ) from None
        return SimPageView(
            items=[SimView.from_row(r) for r in page.items],
            has_next_page=page.has_next_page,
            end_cursor=page.end_cursor,
        )

    @get("/api/v1/sims/counts", summary="Count SIM cards per provider and status")
    async def counts(self, ctx: NamedDependency[RequestContext]) -> list[SimCount]:
        """How many cards each provider has in each status."""
        return await ctx.container.sim_queries.counts()

    @get("/api/v1/sims/{iccid:str}", summary="One SIM card")
    async def get_sim(self, ctx: NamedDependency[RequestContext], iccid: FromPath[str]) -> SimView:
        """The card with this ICCID (404 when unknown)."""
        row = await ctx.container.sim_queries.by_iccid(iccid)
        if row is None:
            raise NotFound(f"no SIM card with ICCID {iccid}")
        return SimView.from_row(row)

    @get("/api/v1/meters/{meter:str}/sim", summary="The SIM card in a meter")
    async def meter_sim(
        self, ctx: NamedDependency[RequestContext], meter: FromPath[str]
    ) -> SimView:
        """The card installed in the meter with this serial (404 when none)."""
        row = await ctx.container.sim_queries.by_meter(meter)
        if row is None:
            raise NotFound(f"meter {meter} has no SIM card installed")
        return SimView.from_row(row)


class SimCommands(Controller):
    """SIM inventory commands; each answers with the card's new state."""

    path = "/api/v1/commands/sims"
    tags = ["SIM commands"]

    @post("/", status_code=201, summary="Add a SIM card to the stock")
    async def add(
        self,
        ctx: NamedDependency[RequestContext],
        data: JSONBody[AddSimBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> SimView:
        """Add a card (status IN_STOCK); its ICCID must be new."""
        spec = SimSpec(
            iccid=data.iccid,
            provider=data.provider,
            sim_number=data.sim_number,
            imsi=data.imsi,
            msisdn=data.msisdn,
            apn=data.apn,
            ip_address=data.ip_address,
            data_limit_mb=data.data_limit,
            activation_date=data.activation_date,
        )
        return await _run(ctx, idempotency_key, wait, lambda s, c: s.add_sim(spec, c))

    @post("/{iccid:str}/update", status_code=200, summary="Change a SIM card's service")
    async def update(
        self,
        ctx: NamedDependency[RequestContext],
        iccid: FromPath[str],
        data: JSONBody[UpdateSimBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> SimView:
        """Change the provider, APN, IP address or data limit (MB)."""
        return await _run(
            ctx,
            idempotency_key,
            wait,
            lambda s, c: s.update_sim(
                iccid,
                c,
                provider=data.provider,
                apn=data.apn,
                ip_address=data.ip_address,
                data_limit_mb=data.data_limit,
            ),
        )

    @post("/{iccid:str}/activate", status_code=200, summary="Activate a SIM card")
    async def activate(
        self,
        ctx: NamedDependency[RequestContext],
        iccid: FromPath[str],
        data: JSONBody[ActivateSimBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> SimView:
        """Put a card in stock into service."""
        on = data.activation_date
        return await _run(ctx, idempotency_key, wait, lambda s, c: s.activate_sim(iccid, on, c))

    @post("/{iccid:str}/suspend", status_code=200, summary="Suspend a SIM card")
    async def suspend(
        self,
        ctx: NamedDependency[RequestContext],
        iccid: FromPath[str],
        data: JSONBody[SimReasonBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> SimView:
        """Pause an active card's service."""
        reason = data.reason
        return await _run(ctx, idempotency_key, wait, lambda s, c: s.suspend_sim(iccid, reason, c))

    @post("/{iccid:str}/resume", status_code=200, summary="Resume a SIM card")
    async def resume(
        self,
        ctx: NamedDependency[RequestContext],
        iccid: FromPath[str],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> SimView:
        """Bring a suspended card back into service."""
        return await _run(ctx, idempotency_key, wait, lambda s, c: s.resume_sim(iccid, c))

    @post("/{iccid:str}/terminate", status_code=200, summary="Terminate a SIM card (admin)")
    async def terminate(
        self,
        ctx: NamedDependency[RequestContext],
        iccid: FromPath[str],
        data: JSONBody[SimReasonBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> SimView:
        """End a card's service for good; refused while it sits in a meter."""
        reason = data.reason
        return await _run(
            ctx, idempotency_key, wait, lambda s, c: s.terminate_sim(iccid, reason, c)
        )

    @post("/{iccid:str}/install", status_code=200, summary="Install a SIM card in a meter")
    async def install(
        self,
        ctx: NamedDependency[RequestContext],
        iccid: FromPath[str],
        data: JSONBody[InstallSimBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> SimView:
        """Put an active card into a meter: one SIM per meter, one meter per SIM."""
        registry, serial = ctx.container.registry, data.meter_serial
        return await _run(
            ctx, idempotency_key, wait, lambda s, c: s.install_sim(registry, serial, iccid, c)
        )

    @post("/remove", status_code=200, summary="Remove the SIM card from a meter")
    async def remove(
        self,
        ctx: NamedDependency[RequestContext],
        data: JSONBody[RemoveSimBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> SimView:
        """Take the card out of the meter; it keeps its status."""
        serial, reason = data.meter_serial, data.reason
        return await _run(ctx, idempotency_key, wait, lambda s, c: s.remove_sim(serial, reason, c))


class SimImports(Controller):
    """CSV import of SIM cards, validated row by row."""

    tags = ["SIM import"]

    @get("/api/v1/templates/sims", media_type="text/csv", summary="SIM card import template")
    async def template(self) -> Response[str]:
        """The CSV template (header and one example row) that the import accepts."""
        return Response(
            template_csv(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="sims-template.csv"'},
        )

    @post(
        "/api/v1/imports/sims",
        status_code=200,
        summary="Import SIM cards from CSV",
        request_max_body_size=MAX_IMPORT_BYTES,
    )
    async def upload(
        self, ctx: NamedDependency[RequestContext], data: MultipartBody[SimImportForm]
    ) -> SimImportReport:
        """Add every valid row (brought to its status); report each bad row by line and field."""
        command_ctx = ctx.command(None)
        content = await data.data.read()
        batch = ctx.container.settings.api.import_batch_size
        report = await anyio.to_thread.run_sync(
            lambda: import_sims(ctx.container.sims, content, command_ctx, batch_size=batch)
        )
        if report.last_position is not None:
            await ctx.container.sim_queries.wait_for(
                report.last_position, ctx.container.settings.api.projection_wait_seconds
            )
        return report
