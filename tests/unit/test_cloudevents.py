"""CloudEvents envelopes of stored events, subjects, and the committed event schemas."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

import msgspec
import pytest

from adapters.nats.cloudevents import EVENT_NAMESPACE, decode_cloudevent, outgoing_event
from adapters.nats.event_schemas import AGGREGATES, all_schemas, data_type, event_classes
from adapters.nats.subjects import event_filter
from commands.codec import MsgspecMapper
from domain.meta import EventMeta
from domain.meter import Meter
from domain.values import ConnectionProfile, Location, MeterSpec

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "docs" / "events" / "schemas"
REQUIRED = {"specversion", "id", "source", "type"}
EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")


def _messages() -> list[tuple[Any, dict[str, Any], str, str]]:
    meta = EventMeta(actor="alice", correlation_id="req-1", idempotency_key="k1", fingerprint="f")
    spec = MeterSpec(
        serial="CE0001",
        manufacturer="Acme",
        model="K1",
        firmware="1.0",
        phases=3,
        region="North",
        area="A1",
        connection=ConnectionProfile(host="127.0.0.1"),
    )
    meter = Meter.register(spec, meta)
    meter.commission(Location(address="1 Main St"), None, meta)
    meter.assign_customer("ACC-9", meta)
    mapper = MsgspecMapper()
    result = []
    for position, event in enumerate(meter.collect_events(), start=41):
        stored = mapper.to_stored_event(event)
        msg = outgoing_event(
            position=position,
            originator_id=stored.originator_id,  # type: ignore[arg-type]
            originator_version=stored.originator_version,
            topic=stored.topic,
            state=stored.state,
            source="urn:hes:test",
            prefix="Pfx_",
        )
        result.append((event, decode_cloudevent(msg.payload), msg.subject, msg.msg_id))
    return result


def test_envelope_has_the_cloudevents_attributes_with_their_types() -> None:
    for event, ce, subject, msg_id in _messages():
        assert ce.keys() >= REQUIRED
        assert ce["specversion"] == "1.0"
        assert (
            ce["id"]
            == msg_id
            == str(uuid5(EVENT_NAMESPACE, f"{event.originator_id}:{event.originator_version}"))
        )
        assert ce["source"] == "urn:hes:test"
        assert ce["subject"] == str(event.originator_id)
        assert ce["datacontenttype"] == "application/json"
        assert ce["time"].endswith("Z")
        assert datetime.fromisoformat(ce["time"]) == event.timestamp.astimezone(UTC)
        assert ce["aggregateversion"] == event.originator_version
        assert isinstance(ce["position"], int) and ce["position"] >= 41
        assert ce["actor"] == "alice" and ce["correlationid"] == "req-1"
        for name in ce:
            assert EXTENSION_NAME.match(name), name
        name = type(event).__name__
        # v1 unless the event class moved on (Registered is v2: the client address may be null)
        version = getattr(type(event), "class_version", 1)
        assert ce["type"] == f"hes.meter.{name}.v{version}"
        assert version == (2 if name == "Registered" else 1)
        assert subject == f"pfx_.hes.events.meter.{name}"
        UUID(ce["id"])


def test_data_holds_the_event_fields_only() -> None:
    for event, ce, _, _ in _messages():
        data = ce["data"]
        assert not {"meta", "timestamp", "originator_topic", "originator_id"} & data.keys()
        decoded: dict[str, Any] = msgspec.convert(data, data_type(type(event)))
        for key, value in decoded.items():
            assert value == getattr(event, key)


def test_ids_are_deterministic() -> None:
    first = [ce["id"] for _, ce, _, _ in _messages()]
    assert len(set(first)) == len(first)
    again = [ce["id"] for _, ce, _, _ in _messages()]
    assert again == first


def test_event_filter_maps_to_prefixed_subjects() -> None:
    assert event_filter("", "meter.*") == "hes.events.meter.*"
    assert event_filter("T1_", "meter.Registered") == "t1_.hes.events.meter.Registered"
    assert event_filter("", ">") == "hes.events.>"
    for bad in ("", "meter..x", ">.meter", "a b"):
        with pytest.raises(ValueError):
            event_filter("", bad)


def test_committed_schemas_match_the_event_classes() -> None:
    """An event type's schema can't change without a new version file (regenerate otherwise)."""
    generated = all_schemas()
    expected_types = {
        f"hes.{aggregate.__name__.lower()}.{cls.__name__}.v{getattr(cls, 'class_version', 1)}.json"
        for aggregate in AGGREGATES
        for cls in event_classes(aggregate)
    }
    assert expected_types <= generated.keys()
    for name, content in generated.items():
        committed = SCHEMAS_DIR / name
        assert committed.exists(), f"{name} missing: run `hes events schemas`"
        assert committed.read_bytes() == content, (
            f"{name} differs from the event class: a compatible change? run `hes events schemas`;"
            " an incompatible one needs a new class_version (and upcaster)"
        )
