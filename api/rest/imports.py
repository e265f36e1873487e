"""Bulk meter import over HTTP and the CSV template it accepts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import anyio.to_thread
from litestar import Controller, Response, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.params import MultipartBody, QueryParameter

from api.context import RequestContext
from commands.meter_csv import template_csv
from commands.meter_import import ImportReport, import_meters

MAX_IMPORT_BYTES = 20 * 1024 * 1024


@dataclass
class MeterImportForm:
    """The multipart form of an import: the CSV file in the part named ``data``."""

    data: UploadFile


class MeterImports(Controller):
    """CSV import of meters, validated row by row."""

    tags = ["meter import"]

    @get("/api/v1/templates/meters", media_type="text/csv", summary="Meter import template")
    async def template(self) -> Response[str]:
        """The CSV template (header and one example row) that the import accepts."""
        return Response(
            template_csv(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="meters-template.csv"'},
        )

    @post(
        "/api/v1/imports/meters",
        status_code=200,
        summary="Import meters from CSV",
        request_max_body_size=MAX_IMPORT_BYTES,
    )
    async def upload(
        self,
        ctx: NamedDependency[RequestContext],
        data: MultipartBody[MeterImportForm],
        region: Annotated[
            str | None,
            QueryParameter(
                name="region", required=False, description="Region for rows without a region column"
            ),
        ] = None,
    ) -> ImportReport:
        """Register every valid row; report each bad row by line, field and reason."""
        command_ctx = ctx.command(None)
        content = await data.data.read()
        batch = ctx.container.settings.api.import_batch_size
        report = await anyio.to_thread.run_sync(
            lambda: import_meters(
                ctx.container.registry,
                content,
                command_ctx,
                batch_size=batch,
                default_region=region,
                sims=ctx.container.sims,
            )
        )
        if report.last_position is not None:
            await ctx.container.meters.wait_for(
                report.last_position, ctx.container.settings.api.projection_wait_seconds
            )
        if report.sims_position is not None:
            await ctx.container.sim_queries.wait_for(
                report.sims_position, ctx.container.settings.api.projection_wait_seconds
            )
        return report
