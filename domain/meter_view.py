"""A meter as its readers see it: the one list of its fields, from which every view derives.

``MeterState`` is the registration spec (``MeterSpec``) plus the lifecycle. The read model's row
extends it (``projections.meters_queries.MeterRow``), the presenters build it from the
aggregate with ``meter_state``, and the REST and GraphQL shapes are checked against it field by
field (``tests/unit/test_meter_fields.py``), so a field added here and missing there fails.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from domain.meter import Meter
from domain.values import ConnectionProfile, Location, MeterSpec, MeterStatus


class MeterState(msgspec.Struct, frozen=True, kw_only=True):
    """What is known of a meter: its spec, status, customer, site, lifecycle times, version."""

    id: UUID
    serial: str
    manufacturer: str
    model: str
    firmware: str
    meter_type: str | None
    phases: int
    region: str
    area: str
    status: MeterStatus
    customer_account: str | None
    location: Location | None
    connection: ConnectionProfile
    concentrator_id: str | None
    sim_card: str | None
    registered_at: datetime
    commissioned_at: datetime | None
    decommissioned_at: datetime | None
    decommission_reason: str | None
    updated_at: datetime
    version: int


SPEC_FIELDS: tuple[str, ...] = tuple(f.name for f in msgspec.structs.fields(MeterSpec))
"""The fields a meter is registered with (every one of them is in ``MeterState``)."""

STATE_FIELDS: tuple[str, ...] = tuple(f.name for f in msgspec.structs.fields(MeterState))
"""Every field of a meter's state, in the order the views list them."""


def spec_values(source: object) -> dict[str, Any]:
    """The spec's fields by name, read from a spec or an input that has the same fields."""
    return {name: getattr(source, name) for name in SPEC_FIELDS}


def meter_state(meter: Meter) -> MeterState:
    """The state of the meter aggregate, as its views show it."""
    return MeterState(
        id=meter.id,
        **spec_values(meter.spec),
        status=meter.status,
        customer_account=meter.customer_account,
        location=meter.location,
        registered_at=meter.created_on,
        commissioned_at=meter.commissioned_at,
        decommissioned_at=meter.decommissioned_at,
        decommission_reason=meter.decommission_reason,
        updated_at=meter.modified_on,
        version=meter.version,
    )
