"""Read-side queries of fleet operations: cohorts, images, TOU plans, campaigns' progress."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from domain.campaign import CampaignKind, CampaignStatus, CohortFilter, CohortMember, MeterState
from domain.errors import Collector
from domain.tou_calendar import TouCalendar
from projections.projection_position import ProjectionPosition

MAX_CAMPAIGN_LIST = 200


class FirmwareImageRow(msgspec.Struct, frozen=True, kw_only=True):
    """An uploaded firmware image (deleted ones are not listed)."""

    id: UUID
    identifier: str
    manufacturer: str
    model: str
    sha256: str
    size: int
    uploaded_by: str
    uploaded_at: datetime


class TouPlanVersionRow(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a TOU plan."""

    version: int
    calendar: TouCalendar
    created_by: str
    created_at: datetime


class TouPlanRow(msgspec.Struct, frozen=True, kw_only=True):
    """A tariff plan's TOU plan with all its versions (latest last)."""

    id: UUID
    tariff_plan: str
    latest_version: int
    updated_at: datetime
    versions: list[TouPlanVersionRow]


class CampaignProgress(msgspec.Struct, frozen=True, kw_only=True):
    """A campaign as the read model shows it, with throughput and the time still needed."""

    id: UUID
    name: str
    kind: CampaignKind
    status: CampaignStatus
    started_by: str
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    meters: int
    pending: int
    running: int
    awaiting: int
    """Firmware verified on the meter, waiting for the scheduled activation."""
    succeeded: int
    failed: int
    skipped: int
    attempts: int
    throughput_per_minute: float | None
    """Meters finished (succeeded or failed) per minute since the start (to the end, if over)."""
    eta_seconds: float | None
    """Time the pending and running meters still need at that throughput (None: unknown);
    meters awaiting a scheduled activation are not counted."""
    spec: dict[str, Any]
    version: int


class CampaignMeterRow(msgspec.Struct, frozen=True, kw_only=True):
    """One meter of a campaign."""

    serial: str
    meter_id: UUID
    cell: str
    state: MeterState
    attempts: int
    command_id: UUID | None
    reason: str | None
    updated_at: datetime


def _t(schema: str, text: str) -> sql.Composed:
    return sql.SQL(text).format(s=sql.Identifier(schema))  # type: ignore[arg-type]


async def resolve_cohort(
    pool: AsyncConnectionPool[Any], schema: str, cohort: CohortFilter
) -> list[CohortMember]:
    """The registered meters a cohort targets now, ordered by serial (a list keeps its order).

    Explicit serials must all name meters in service: unknown or decommissioned ones are a
    validation error naming them. A filter takes every meter in service that matches.
    """
    columns = "id AS meter_id, serial, manufacturer, model, concentrator_id"
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        if cohort.serials:
            await cur.execute(
                _t(
                    schema,
                    f"SELECT {columns}, status FROM {{s}}.meters WHERE upper(serial) = ANY(%s)",
                ),
                ([s.strip().upper() for s in cohort.serials],),
            )
            rows = {r["serial"].upper(): r for r in await cur.fetchall()}
            errors = Collector()
            for i, serial in enumerate(cohort.serials):
                row = rows.get(serial.strip().upper())
                if row is None:
                    errors.add(f"cohort.serials[{i}]", "known", f"no meter {serial} is registered")
                elif row["status"] == "DECOMMISSIONED":
                    errors.add(
                        f"cohort.serials[{i}]", "active", f"meter {serial} is decommissioned"
                    )
            errors.raise_if_any()
            ordered = [rows[s.strip().upper()] for s in cohort.serials]
        else:
            where = ["status <> 'DECOMMISSIONED'"]
            params: list[Any] = []
            for name in ("region", "area", "model", "firmware"):
                value = getattr(cohort, name)
                if value is not None:
                    where.append(f"{name} = %s")
                    params.append(value)
            await cur.execute(
                _t(
                    schema,
                    f"SELECT {columns} FROM {{s}}.meters WHERE {' AND '.join(where)} "
                    "ORDER BY serial",
                ),
                params,
            )
            ordered = await cur.fetchall()
    return [
        CohortMember(
            meter_id=r["meter_id"],
            serial=r["serial"],
            manufacturer=r["manufacturer"],
            model=r["model"],
            concentrator_id=r["concentrator_id"],
        )
        for r in ordered
    ]


async def list_images(pool: AsyncConnectionPool[Any], schema: str) -> list[FirmwareImageRow]:
    """The firmware images not deleted, by manufacturer, model and identifier."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _t(
                schema,
                "SELECT id, identifier, manufacturer, model, sha256, size, uploaded_by, "
                "uploaded_at FROM {s}.firmware_images WHERE deleted_at IS NULL "
                "ORDER BY manufacturer, model, identifier",
            )
        )
        return [msgspec.convert(r, FirmwareImageRow) for r in await cur.fetchall()]


async def list_tou_plans(pool: AsyncConnectionPool[Any], schema: str) -> list[TouPlanRow]:
    """Every TOU plan with its versions, by tariff plan name."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _t(
                schema,
                "SELECT p.id, p.tariff_plan, p.latest_version, p.updated_at, "
                "coalesce(jsonb_agg(jsonb_build_object('version', v.version, 'calendar', "
                "v.calendar, 'created_by', v.created_by, 'created_at', v.created_at) "
                "ORDER BY v.version) FILTER (WHERE v.version IS NOT NULL), '[]') AS versions "
                "FROM {s}.tou_plans p LEFT JOIN {s}.tou_plan_versions v ON v.plan_id = p.id "
                "GROUP BY p.id ORDER BY p.tariff_plan",
            )
        )
        return [msgspec.convert(r, TouPlanRow, strict=False) for r in await cur.fetchall()]


_CAMPAIGN_COLUMNS = (
    "id, name, kind, status, started_by, started_at, updated_at, finished_at, meters, pending, "
    "running, awaiting, succeeded, failed, skipped, attempts, spec, version"
)


async def list_campaigns(
    pool: AsyncConnectionPool[Any], schema: str, status: CampaignStatus | None = None
) -> list[CampaignProgress]:
    """The latest campaigns (optionally in one status), newest first."""
    where = "WHERE status = %s" if status is not None else ""
    params = [status.value] if status is not None else []
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _t(
                schema,
                f"SELECT {_CAMPAIGN_COLUMNS} FROM {{s}}.campaigns {where} "
                f"ORDER BY started_at DESC LIMIT {MAX_CAMPAIGN_LIST}",
            ),
            params,
        )
        return [_progress(r) for r in await cur.fetchall()]


async def get_campaign(
    pool: AsyncConnectionPool[Any], schema: str, id_: UUID
) -> CampaignProgress | None:
    """One campaign's progress, or None."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _t(schema, f"SELECT {_CAMPAIGN_COLUMNS} FROM {{s}}.campaigns WHERE id = %s"), (id_,)
        )
        row = await cur.fetchone()
    return None if row is None else _progress(row)


async def campaign_meters(
    pool: AsyncConnectionPool[Any],
    schema: str,
    id_: UUID,
    state: MeterState | None = None,
    *,
    after: str | None = None,
    limit: int = 500,
) -> list[CampaignMeterRow]:
    """A campaign's meters by serial (optionally in one state), after the serial ``after``."""
    where = ["campaign_id = %s"]
    params: list[Any] = [id_]
    if state is not None:
        where.append("state = %s")
        params.append(state.value)
    if after is not None:
        where.append("serial > %s")
        params.append(after)
    params.append(max(1, min(limit, 1000)))
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _t(
                schema,
                "SELECT serial, meter_id, cell, state, attempts, command_id, reason, updated_at "
                f"FROM {{s}}.campaign_meters WHERE {' AND '.join(where)} "
                "ORDER BY serial LIMIT %s",
            ),
            params,
        )
        return [msgspec.convert(r, CampaignMeterRow) for r in await cur.fetchall()]


def _progress(row: dict[str, Any]) -> CampaignProgress:
    finished = row["succeeded"] + row["failed"]
    end = row["finished_at"] or datetime.now(UTC)
    minutes = (end - row["started_at"]).total_seconds() / 60
    rate = finished / minutes if finished and minutes > 0 else None
    left = row["pending"] + row["running"]
    eta = None
    if rate:
        eta = left / rate * 60
    elif left == 0:
        eta = 0.0
    return msgspec.convert(
        row | {"throughput_per_minute": rate, "eta_seconds": eta}, CampaignProgress
    )


class FleetPosition(ProjectionPosition):
    """How far the fleet_view projection got (read-your-writes after a fleet command)."""

    application_name = "fleet"

    def __init__(self, pool: AsyncConnectionPool[Any], schema: str) -> None:
        self.pool = pool
        self.schema = sql.Identifier(schema)
        self.tracking = sql.Identifier("fleet_view_tracking")
