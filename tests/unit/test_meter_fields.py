"""The meter's fields come from one place (``domain.meter_view``): every view agrees with it.

The read-model row extends ``MeterState``; the REST bodies and views and the GraphQL types list
the fields again (their wire shapes and the schema are public), so each is compared with the
domain field by field, names mapped snake_case → camelCase. A field added in one place and not
the others fails here.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from msgspec.structs import fields

from api.graphql.types import (
    Connection,
    ConnectionInput,
    LocationInput,
    Meter,
    Place,
    RegisterMeterInput,
)
from api.presenters import row_from_aggregate
from api.rest.bodies import (
    ConnectionBody,
    ConnectionView,
    LocationBody,
    LocationView,
    MeterView,
    RegisterMeterBody,
)
from domain.meta import EventMeta
from domain.meter import Meter as MeterAggregate
from domain.meter_view import SPEC_FIELDS, STATE_FIELDS, MeterState, meter_state
from domain.values import ConnectionProfile, Location, MeterSpec, camel
from projections.meters_queries import MeterRow

READ_MODEL_ONLY = ("last_seen",)
"""Fields the read model adds to a meter's state (the newest reading's time)."""
GRAPHQL_ONLY = {"online", "dlms_capabilities"}
"""Fields GraphQL computes from the row (reporting window) or resolves on demand."""


def struct_names(struct: type[msgspec.Struct]) -> list[str]:
    """Python names of a struct's fields, in order."""
    return [f.name for f in fields(struct)]


def wire_names(struct: type[msgspec.Struct]) -> list[str]:
    """JSON names of a struct's fields, in order."""
    return [f.encode_name for f in fields(struct)]


def graphql_fields(type_: type) -> dict[str, str]:
    """Python name → GraphQL name of a strawberry type's fields."""
    definition = type_.__strawberry_definition__  # type: ignore[attr-defined]
    return {f.python_name: f.graphql_name or camel(f.python_name) for f in definition.fields}


def disagreements(expected: list[str], shape: dict[str, str]) -> list[str]:
    """How a shape (python name → wire name) differs from the expected snake_case fields."""
    wanted = {name: camel(name) for name in expected}
    return sorted(
        [f"missing {n}" for n in wanted.keys() - shape.keys()]
        + [f"extra {n}" for n in shape.keys() - wanted.keys()]
        + [
            f"{n} is {shape[n]} on the wire"
            for n in wanted.keys() & shape.keys()
            if shape[n] != wanted[n]
        ]
    )


def msgspec_shape(struct: type[msgspec.Struct]) -> dict[str, str]:
    """Python name → wire name of a struct's fields."""
    return dict(zip(struct_names(struct), wire_names(struct), strict=True))


def test_the_spec_is_part_of_the_state_with_the_same_types() -> None:
    state = {f.name: f.type for f in fields(MeterState)}
    for spec_field in fields(MeterSpec):
        assert state.get(spec_field.name) == spec_field.type, spec_field.name


def test_the_read_model_row_is_the_state_and_its_last_reading() -> None:
    assert struct_names(MeterRow) == [*STATE_FIELDS, *READ_MODEL_ONLY]


ROW_FIELDS = [*STATE_FIELDS, *READ_MODEL_ONLY]
SHAPES: dict[str, tuple[list[str], dict[str, str]]] = {
    "REST MeterView": (ROW_FIELDS, msgspec_shape(MeterView)),
    "REST RegisterMeterBody": (list(SPEC_FIELDS), msgspec_shape(RegisterMeterBody)),
    "REST ConnectionBody": (struct_names(ConnectionProfile), msgspec_shape(ConnectionBody)),
    "REST ConnectionView": (struct_names(ConnectionProfile), msgspec_shape(ConnectionView)),
    "REST LocationBody": (struct_names(Location), msgspec_shape(LocationBody)),
    "REST LocationView": (struct_names(Location), msgspec_shape(LocationView)),
    "GraphQL Meter": (
        ROW_FIELDS,
        {k: v for k, v in graphql_fields(Meter).items() if k not in GRAPHQL_ONLY},
    ),
    "GraphQL RegisterMeterInput": (list(SPEC_FIELDS), graphql_fields(RegisterMeterInput)),
    "GraphQL Connection": (struct_names(ConnectionProfile), graphql_fields(Connection)),
    "GraphQL ConnectionInput": (struct_names(ConnectionProfile), graphql_fields(ConnectionInput)),
    "GraphQL Place": (struct_names(Location), graphql_fields(Place)),
    "GraphQL LocationInput": (struct_names(Location), graphql_fields(LocationInput)),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_view_lists_the_domains_fields_in_camel_case(shape: str) -> None:
    expected, found = SHAPES[shape]
    assert disagreements(expected, found) == [], shape


def test_graphql_computes_only_its_own_fields() -> None:
    assert graphql_fields(Meter).keys() >= GRAPHQL_ONLY
    assert not GRAPHQL_ONLY & set(ROW_FIELDS)


def test_a_field_added_to_the_domain_only_is_found() -> None:
    class Wider(MeterState, frozen=True, kw_only=True):
        tariff_class: str | None = None

    assert disagreements(struct_names(Wider), msgspec_shape(MeterView)) == [
        "extra last_seen",
        "missing tariff_class",
    ]
    assert disagreements(["sim_card"], {"sim_card": "simcard"}) == [
        "sim_card is simcard on the wire"
    ]


SPEC = MeterSpec(
    serial="SN-FIELDS-1",
    manufacturer="Kaifa",
    model="MA309M",
    firmware="1.0.2",
    phases=3,
    region="North",
    area="Zone A",
    connection=ConnectionProfile(host="127.0.0.1"),
    meter_type="3-phase CT",
    concentrator_id="DC-0042",
    sim_card="8944500012345678901",
)


def test_the_aggregates_state_carries_every_spec_field_into_the_row() -> None:
    meter = MeterAggregate.register(SPEC, EventMeta(actor="alice", correlation_id="c-1"))
    state = meter_state(meter)
    row = row_from_aggregate(meter)
    for name in SPEC_FIELDS:
        assert getattr(state, name) == getattr(SPEC, name) == getattr(row, name), name
    assert (row.id, row.version, row.last_seen) == (meter.id, meter.version, None)
    assert msgspec.structs.asdict(state) == {
        k: v for k, v in msgspec.structs.asdict(row).items() if k != "last_seen"
    }


@pytest.mark.parametrize(
    "body",
    [
        RegisterMeterBody(
            serial=SPEC.serial,
            manufacturer=SPEC.manufacturer,
            model=SPEC.model,
            firmware=SPEC.firmware,
            phases=SPEC.phases,
            region=SPEC.region,
            area=SPEC.area,
            connection=ConnectionBody(host="127.0.0.1"),
            meter_type=SPEC.meter_type,
            concentrator_id=SPEC.concentrator_id,
            sim_card=SPEC.sim_card,
        ),
        RegisterMeterInput(
            serial=SPEC.serial,
            manufacturer=SPEC.manufacturer,
            model=SPEC.model,
            firmware=SPEC.firmware,
            phases=SPEC.phases,
            region=SPEC.region,
            area=SPEC.area,
            connection=ConnectionInput(host="127.0.0.1"),
            meter_type=SPEC.meter_type,
            concentrator_id=SPEC.concentrator_id,
            sim_card=SPEC.sim_card,
        ),
    ],
)
def test_register_inputs_become_the_domain_spec(body: Any) -> None:
    assert body.to_domain() == SPEC
