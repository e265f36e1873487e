"""Turns command outcomes into read-model rows, honouring read-your-writes."""

from __future__ import annotations

import msgspec

from commands.meters import CommandOutcome, Outcome
from commands.tariffs import Outcome as TariffOutcome
from domain.meter import Meter
from domain.meter_view import meter_state
from domain.tariff import Tariff
from projections.dlms_queries import DlmsQueries, RemoteCommandRow
from projections.meters_queries import MeterQueries, MeterRow
from projections.tariffs_queries import TariffQueries, TariffRow


def row_from_aggregate(meter: Meter) -> MeterRow:
    """The read-model row the projection will write for this aggregate state."""
    return MeterRow(**msgspec.structs.asdict(meter_state(meter)))


async def present(outcome: Outcome, queries: MeterQueries, wait_seconds: float) -> MeterRow:
    """The meter after a command: from the read model once it caught up, else from the aggregate."""
    if wait_seconds > 0:
        if outcome.notification_id is not None:
            await queries.wait_for(outcome.notification_id, wait_seconds)
        row = await queries.by_id(outcome.meter.id)
        if row is not None and row.version >= outcome.meter.version:
            return row
    return row_from_aggregate(outcome.meter)


def tariff_row_from_aggregate(tariff: Tariff) -> TariffRow:
    """The read-model row the tariffs projection will write for this aggregate state."""
    return TariffRow(
        region=tariff.region,
        currency=tariff.currency,
        base_price=tariff.base_price,
        tiers=tuple(tariff.tiers),
        tou=tuple(tariff.tou),
        timezone=tariff.timezone,
        min_change_pct=tariff.min_change_pct,
        load_price=tariff.load_price,
        load_pct=tariff.load_pct,
        load_bucket=tariff.bucket,
        override=tariff.override,
        version=tariff.version,
        updated_at=tariff.modified_on,
    )


async def present_tariff(
    outcome: TariffOutcome, queries: TariffQueries, wait_seconds: float
) -> TariffRow:
    """The tariff after a command: from the read model once it caught up, else the aggregate."""
    if wait_seconds > 0:
        if outcome.notification_id is not None:
            await queries.wait_for(outcome.notification_id, wait_seconds)
        row = await queries.by_region(outcome.tariff.region)
        if row is not None and row.version >= outcome.tariff.version:
            return row
    return tariff_row_from_aggregate(outcome.tariff)


async def present_command(
    outcome: CommandOutcome, queries: DlmsQueries, wait_seconds: float, projection_wait: float
) -> RemoteCommandRow | None:
    """The remote command's read-model row once it shows the outcome (with ``wait_seconds``,
    once the meter answered); ``None`` when the caller must answer from the aggregate."""
    row = await queries.wait_for_command(
        outcome.command.id,
        outcome.meter.version,
        max(wait_seconds, projection_wait),
        finished=wait_seconds > 0,
    )
    if row is None or row.meter_version < outcome.meter.version:
        return None
    return row
