"""The msgspec event mapper: every Meter event survives storage with its Python types."""

from __future__ import annotations

from datetime import datetime
from functools import reduce
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest
from eventsourcing.persistence import MapperDeserialisationError, StoredEvent

from commands.codec import MsgspecMapper
from domain.meta import EventMeta
from domain.meter import Meter
from domain.values import (
    ConnectionProfile,
    Location,
    MeterSpec,
    SecurityLevel,
    Transport,
)

SPEC = MeterSpec(
    serial="SN-0001",
    manufacturer="Kaifa",
    model="MA309M",
    firmware="1.0.2",
    phases=3,
    region="North",
    area="Zone A",
    connection=ConnectionProfile(host="127.20.30.40"),
    meter_type="3-phase CT",
)
HDLC = ConnectionProfile(
    host="meter-7.example.net",
    port=4060,
    transport=Transport.HDLC,
    client_address=1,
    server_address=1,
    physical_address=17,
    security=SecurityLevel.HLS_GMAC,
)
EVENT_TYPES = {
    Meter.Registered,
    Meter.Commissioned,
    Meter.CustomerAssigned,
    Meter.CustomerUnassigned,
    Meter.ConnectionProfileChanged,
    Meter.Decommissioned,
}


def meta(n: int) -> EventMeta:
    """Distinct metadata for the n-th command, with and without an idempotency key."""
    if n % 2:
        return EventMeta(actor=f"user-{n}", correlation_id=str(uuid4()))
    return EventMeta(
        actor=f"user-{n}", correlation_id=str(uuid4()), idempotency_key=f"k{n}", fingerprint="fp"
    )


def all_events() -> list[Any]:
    """One of every Meter event, with optional fields both set and empty."""
    meter = Meter.register(SPEC, meta(0))
    meter.assign_customer("ACC-1", meta(1))
    meter.commission(
        Location(address="1 Main Street", latitude=51.5, longitude=-0.12), None, meta(2)
    )
    meter.unassign_customer("moved out", meta(3))
    meter.change_connection_profile(HDLC, meta(4))
    meter.decommission("burnt out", meta(5))
    return list(meter.collect_events())


def assert_same_types(original: Any, decoded: Any, path: str) -> None:
    """Fail unless ``decoded`` has the very types of ``original``, recursively."""
    assert type(decoded) is type(original), path
    if isinstance(original, msgspec.Struct):
        for name in original.__struct_fields__:
            assert_same_types(getattr(original, name), getattr(decoded, name), f"{path}.{name}")


def test_the_fixture_covers_every_meter_event_type() -> None:
    assert {type(e) for e in all_events()} == EVENT_TYPES


@pytest.mark.parametrize("index", range(len(EVENT_TYPES)))
def test_stored_event_decodes_to_an_equal_event_of_the_same_types(index: int) -> None:
    mapper = MsgspecMapper()
    event = all_events()[index]

    stored = mapper.to_stored_event(event)
    decoded: Any = mapper.to_domain_event(stored)

    assert type(decoded) is type(event)
    assert decoded == event
    assert vars(decoded) == vars(event)
    for name, value in vars(event).items():
        assert_same_types(value, vars(decoded)[name], name)
    assert isinstance(decoded.timestamp, datetime)
    assert decoded.timestamp.tzinfo is not None
    assert isinstance(decoded.originator_id, UUID)


def test_enums_decode_as_enum_members() -> None:
    mapper = MsgspecMapper()
    changed = next(e for e in all_events() if isinstance(e, Meter.ConnectionProfileChanged))

    decoded = mapper.to_domain_event(mapper.to_stored_event(changed))

    assert isinstance(decoded, Meter.ConnectionProfileChanged)
    assert decoded.connection.transport is Transport.HDLC
    assert decoded.connection.security is SecurityLevel.HLS_GMAC


def test_id_and_version_live_in_their_columns_only() -> None:
    mapper = MsgspecMapper()
    event = all_events()[0]

    stored = mapper.to_stored_event(event)

    state = msgspec.json.decode(stored.state)
    assert "originator_id" not in state
    assert "originator_version" not in state
    assert (stored.originator_id, stored.originator_version) == (event.originator_id, 1)


def test_decoded_events_rebuild_the_meter() -> None:
    mapper = MsgspecMapper()
    events = all_events()

    decoded: list[Any] = [mapper.to_domain_event(mapper.to_stored_event(e)) for e in events]
    original = reduce(lambda a, e: e.mutate(a), events, None)
    rebuilt = reduce(lambda a, e: e.mutate(a), decoded, None)

    assert isinstance(rebuilt, Meter)
    assert vars(rebuilt) == vars(original)


def test_string_originator_id_becomes_a_uuid() -> None:
    mapper = MsgspecMapper()
    stored = mapper.to_stored_event(all_events()[0])
    as_text = StoredEvent(
        originator_id=str(stored.originator_id),
        originator_version=stored.originator_version,
        topic=stored.topic,
        state=stored.state,
    )

    decoded = mapper.to_domain_event(as_text)

    assert decoded.originator_id == stored.originator_id
    assert isinstance(decoded.originator_id, UUID)


@pytest.mark.parametrize(
    "state",
    [b"{not json", b'{"timestamp": "yesterday", "reason": "x", "meta": {}}'],
)
def test_undecodable_state_raises_a_mapper_error(state: bytes) -> None:
    mapper = MsgspecMapper()
    stored = mapper.to_stored_event(all_events()[-1])
    broken = StoredEvent(
        originator_id=stored.originator_id,
        originator_version=stored.originator_version,
        topic=stored.topic,
        state=state,
    )

    with pytest.raises(MapperDeserialisationError):
        mapper.to_domain_event(broken)


def test_v1_events_recorded_before_the_dlms_profiles_still_load() -> None:
    """Registered, ConnectionProfileChanged and RemoteCommandRequested are v2 now (a client
    address may be null, a command may be DISCOVER); v1 states upcast unchanged."""
    mapper = MsgspecMapper()
    meter = Meter.register(SPEC, meta(1))
    meter.change_connection_profile(HDLC, meta(2))
    for event in meter.collect_events():
        stored = mapper.to_stored_event(event)
        state = msgspec.json.decode(stored.state)
        assert state.pop("class_version") == 2
        v1 = StoredEvent(
            originator_id=stored.originator_id,
            originator_version=stored.originator_version,
            topic=stored.topic,
            state=msgspec.json.encode(state),
        )
        again = mapper.to_domain_event(v1)
        assert vars(again) == vars(event)
    assert SPEC.connection.client_address is None  # follows the DLMS profile
