"""JSON Schemas of the relayed events' ``data`` (one per type and version) and of the envelope.

Generated with ``msgspec.json.schema`` from the type hints of the domain event classes, so the
schema is the exact shape the event store encodes. File names carry the version
(``hes.meter.Registered.v1.json``); an incompatible change to an event needs a new
``class_version`` (an upcaster) and therefore a new file, never an edit of a published one.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, ClassVar, TypedDict, TypeVar

import msgspec
from eventsourcing.domain import Aggregate

from adapters.nats.cloudevents import NON_DATA_KEYS, CloudEvent, event_type_of_class
from domain.alert import Alert, AlertSeries
from domain.campaign import Campaign
from domain.customer import Customer
from domain.firmware import FirmwareImage
from domain.meter import Meter
from domain.region import Region
from domain.sim_card import MeterSimSlot, SimCard
from domain.tariff import Tariff
from domain.tou_plan import TouPlan

AGGREGATES: tuple[type[Aggregate], ...] = (
    Meter,
    Tariff,
    Region,
    Alert,
    AlertSeries,
    SimCard,
    MeterSimSlot,
    Customer,
    FirmwareImage,
    TouPlan,
    Campaign,
)
"""Aggregates whose events are relayed to HES_EVENTS."""

ENVELOPE_FILE = "cloudevents-envelope.json"
_LIBRARY_BASES = frozenset({"Event", "Created"})
"""Base event classes the library re-declares in every aggregate; never recorded themselves."""
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def event_classes(aggregate: type[Aggregate]) -> list[type[Aggregate.Event]]:
    """The event classes declared in an aggregate class, in declaration order.

    The library re-declares ``Event`` and ``Created`` in every aggregate; ``Created`` is recorded
    only by an aggregate that declares no other creation event (``Tariff.Created``).
    """
    declared = {
        name: value
        for name, value in vars(aggregate).items()
        if isinstance(value, type) and issubclass(value, Aggregate.Event)
    }
    own_creation = any(
        issubclass(value, Aggregate.Created)
        for name, value in declared.items()
        if name not in _LIBRARY_BASES
    )
    return [
        value
        for name, value in declared.items()
        if name not in _LIBRARY_BASES or (name == "Created" and not own_creation)
    ]


def data_type(cls: type) -> type:
    """A TypedDict of the fields an event class carries in CloudEvents ``data``."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {
        name: hint
        for name, hint in hints.items()
        if name not in NON_DATA_KEYS
        and typing.get_origin(hint) is not ClassVar
        and not isinstance(hint, TypeVar)
    }
    kind = event_type_of_class(cls)
    name = f"{kind.aggregate.title()}{kind.name}Data"
    return typing.cast(type, TypedDict(name, fields))  # type: ignore[operator]


def event_schema(cls: type) -> dict[str, Any]:
    """JSON Schema of an event class's ``data`` at its current class version."""
    kind = event_type_of_class(cls)
    type_name = kind.type_name(getattr(cls, "class_version", 1))
    schema = msgspec.json.schema(data_type(cls))
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:hes:schema:{type_name}",
        "title": type_name,
        "description": _docstring(cls),
        **schema,
    }


def envelope_schema() -> dict[str, Any]:
    """JSON Schema of the CloudEvents envelope every HES_EVENTS message has."""
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": "urn:hes:schema:cloudevents-envelope",
        "title": "HES CloudEvents 1.0 envelope (structured mode, JSON)",
        **msgspec.json.schema(CloudEvent),
    }


def all_schemas() -> dict[str, bytes]:
    """File name → formatted JSON of every current schema."""
    schemas = {ENVELOPE_FILE: envelope_schema()}
    for aggregate in AGGREGATES:
        for cls in event_classes(aggregate):
            schemas[f"{event_schema(cls)['title']}.json"] = event_schema(cls)
    return {
        name: msgspec.json.format(msgspec.json.encode(schema), indent=2) + b"\n"
        for name, schema in schemas.items()
    }


def write_schemas(out: Path) -> list[Path]:
    """Write every current schema under ``out``; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in all_schemas().items():
        path = out / name
        path.write_bytes(content)
        written.append(path)
    return written


def _docstring(cls: type) -> str:
    # The library turns event classes into dataclasses, which replaces a missing docstring with
    # the constructor signature in a generated subclass: take the first one written by hand.
    for klass in cls.__mro__:
        doc = klass.__dict__.get("__doc__")
        if doc and not doc.startswith(f"{klass.__name__}("):
            return " ".join(doc.split())
    return ""
