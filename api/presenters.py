"""Turns command outcomes into read-model rows, honouring read-your-writes."""

from __future__ import annotations

from commands.meters import CommandOutcome, Outcome
from commands.tariffs import Outcome as TariffOutcome
from domain.meter import Meter
from domain.tariff import Tariff
from projections.dlms_queries import DlmsQueries, RemoteCommandRow
from projections.meters_queries import MeterQueries, MeterRow
from projections.tariffs_queries import TariffQueries, TariffRow


def row_from_aggregate(meter: Meter) -> MeterRow:
    """The read-model row the projection will write for this aggregate state."""
    spec = meter.spec
    return MeterRow(
        id=meter.id,
        serial=spec.serial,
        manufacturer=spec.manufacturer,
        model=spec.model,
        firmware=spec.firmware,
        meter_type=spec.meter_type,
        phases=spec.phases,
        region=spec.region,
        area=spec.area,
        status=meter.status,
        customer_account=meter.customer_account,
        location=meter.location,
        connection=spec.connection,
        concentrator_id=spec.concentrator_id,
        sim_card=spec.sim_card,
        registered_at=meter.created_on,
        commissioned_at=meter.commissioned_at,
        decommissioned_at=meter.decommissioned_at,
        decommission_reason=meter.decommission_reason,
        updated_at=meter.modified_on,
        version=meter.version,
    )


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
