"""The Meter aggregate: registration rules, lifecycle transitions, idempotency and replay."""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from domain.errors import Conflict, ValidationFailed
from domain.idempotency import MAX_REMEMBERED_KEYS
from domain.meta import EventMeta
from domain.meter import Meter, meter_id
from domain.text import SERIAL_RE
from domain.values import (
    ConnectionProfile,
    Location,
    MeterSpec,
    MeterStatus,
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
    concentrator_id="DC-0042",
    sim_card="8944500012345678901",
)
HOME = Location(address="1 Main Street", latitude=51.5, longitude=-0.12)
HDLC = ConnectionProfile(
    host="meter-7.example.net",
    port=4060,
    transport=Transport.HDLC,
    client_address=1,
    server_address=1,
    physical_address=17,
    security=SecurityLevel.HLS_GMAC,
)


def meta(
    correlation_id: str = "corr-1",
    key: str | None = None,
    fingerprint: str | None = None,
    actor: str = "alice",
) -> EventMeta:
    """Event metadata for a test command."""
    return EventMeta(
        actor=actor,
        correlation_id=correlation_id,
        idempotency_key=key,
        fingerprint=fingerprint,
    )


def registered(**changes: Any) -> Meter:
    """A freshly registered meter whose registration event is already collected."""
    meter = Meter.register(replace(SPEC, **changes), meta("reg"))
    meter.collect_events()
    return meter


def broken_rules(spec: MeterSpec) -> set[tuple[str, str]]:
    """The (field, rule) pairs registering ``spec`` breaks."""
    with pytest.raises(ValidationFailed) as failed:
        Meter.register(spec, meta())
    return {(e.field, e.rule) for e in failed.value.errors}


def state(meter: Meter) -> dict[str, Any]:
    """Everything the aggregate holds except events not yet collected."""
    return {k: v for k, v in vars(meter).items() if k != "_pending_events"}


# -- registration ----------------------------------------------------------------------


def test_register_records_the_spec_and_starts_registered() -> None:
    meter = Meter.register(SPEC, meta("c-reg", actor="bob"))

    assert meter.id == meter_id("SN-0001")
    assert meter.spec == SPEC
    assert meter.status is MeterStatus.REGISTERED
    assert meter.customer_account is None
    assert meter.location is None
    (created,) = meter.collect_events()
    assert isinstance(created, Meter.Registered)
    assert created.meta == meta("c-reg", actor="bob")


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"serial": ""}, "serial", "format"),
        ({"serial": "-SN1"}, "serial", "format"),
        ({"serial": "SN 1"}, "serial", "format"),
        ({"serial": "S" * 65}, "serial", "format"),
        ({"serial": "SN1\n"}, "serial", "format"),
        ({"manufacturer": ""}, "manufacturer", "format"),
        ({"manufacturer": "Kaifa\n"}, "manufacturer", "format"),
        ({"model": "m" * 65}, "model", "format"),
        ({"region": "#north"}, "region", "format"),
        ({"area": " Zone"}, "area", "format"),
        ({"firmware": ""}, "firmware", "length"),
        ({"firmware": "   "}, "firmware", "length"),
        ({"firmware": "f" * 65}, "firmware", "length"),
        ({"phases": 2}, "phases", "allowed"),
        ({"phases": 0}, "phases", "allowed"),
        ({"meter_type": ""}, "meterType", "length"),
        ({"concentrator_id": " "}, "concentratorId", "length"),
        ({"sim_card": "9" * 65}, "simCard", "length"),
    ],
)
def test_each_spec_rule_names_its_field(changes: dict[str, Any], field: str, rule: str) -> None:
    assert broken_rules(replace(SPEC, **changes)) == {(field, rule)}


@pytest.mark.parametrize(
    ("connection", "field", "rule"),
    [
        (ConnectionProfile(host="999.1.1.1"), "connection.host", "host"),
        (ConnectionProfile(host="10.0.0"), "connection.host", "host"),
        (ConnectionProfile(host="bad host"), "connection.host", "host"),
        (ConnectionProfile(host="meter.example\n"), "connection.host", "host"),
        (ConnectionProfile(host="h", port=0), "connection.port", "range"),
        (ConnectionProfile(host="h", port=65536), "connection.port", "range"),
        (
            ConnectionProfile(host="h", client_address=0, security=SecurityLevel.LLS),
            "connection.clientAddress",
            "range",
        ),
        (
            ConnectionProfile(host="h", client_address=128, security=SecurityLevel.LLS),
            "connection.clientAddress",
            "range",
        ),
        (ConnectionProfile(host="h", server_address=-1), "connection.serverAddress", "range"),
        (ConnectionProfile(host="h", server_address=0x4000), "connection.serverAddress", "range"),
        (
            ConnectionProfile(host="h", physical_address=5),
            "connection.physicalAddress",
            "hdlc-only",
        ),
        (
            ConnectionProfile(host="h", transport=Transport.HDLC, physical_address=0x4000),
            "connection.physicalAddress",
            "range",
        ),
        (ConnectionProfile(host="h", client_address=32), "connection.security", "public-client"),
    ],
)
def test_each_connection_rule_names_its_field(
    connection: ConnectionProfile, field: str, rule: str
) -> None:
    assert broken_rules(replace(SPEC, connection=connection)) == {(field, rule)}


@pytest.mark.parametrize(
    "connection",
    [
        ConnectionProfile(host="::1"),
        ConnectionProfile(host="meter-7.example.net", client_address=1),
        ConnectionProfile(host="127.0.0.1", client_address=32, security=SecurityLevel.LLS),
        HDLC,
    ],
)
def test_valid_connection_profiles_register(connection: ConnectionProfile) -> None:
    assert Meter.register(replace(SPEC, connection=connection), meta()).spec.connection == (
        connection
    )


def test_registration_names_every_broken_rule_at_once() -> None:
    spec = replace(
        SPEC, serial="", firmware="", phases=5, connection=ConnectionProfile(host="h", port=0)
    )

    assert broken_rules(spec) == {
        ("serial", "format"),
        ("firmware", "length"),
        ("phases", "allowed"),
        ("connection.port", "range"),
    }


def test_id_is_derived_from_the_serial_ignoring_case() -> None:
    lower = Meter.register(replace(SPEC, serial="sn-abc"), meta())
    upper = Meter.register(replace(SPEC, serial="SN-ABC"), meta())

    assert lower.id == upper.id == meter_id("Sn-Abc") == meter_id(" sn-abc ")
    assert meter_id("SN-ABC") != meter_id("SN-ABD")
    # Stored events are keyed by this id: it must never change between releases.
    assert meter_id("ABC123") == UUID("525c483c-d206-52af-9eeb-f17871cbb12a")


@settings(deadline=None, max_examples=200)
@given(serial=st.from_regex(SERIAL_RE, fullmatch=True))
def test_any_valid_serial_registers_with_a_stable_id(serial: str) -> None:
    meter = Meter.register(replace(SPEC, serial=serial), meta())

    assert meter.spec.serial == serial
    assert meter.id == meter_id(serial) == meter_id(serial.lower()) == meter_id(serial.upper())


# -- commissioning ---------------------------------------------------------------------


def test_commission_installs_the_meter_for_a_customer() -> None:
    meter = registered()

    meter.commission(HOME, "ACC-1", meta("c-com"))

    (event,) = meter.collect_events()
    assert isinstance(event, Meter.Commissioned)
    assert meter.status is MeterStatus.COMMISSIONED
    assert meter.location == HOME
    assert meter.customer_account == "ACC-1"
    assert meter.commissioned_at == event.timestamp


def test_commission_without_customer_keeps_an_earlier_assignment() -> None:
    meter = registered()
    meter.assign_customer("ACC-1", meta())

    meter.commission(Location(address="Depot"), None, meta())

    assert meter.customer_account == "ACC-1"


def test_double_commission_is_a_conflict() -> None:
    meter = registered()
    meter.commission(HOME, None, meta())

    with pytest.raises(Conflict, match="already commissioned"):
        meter.commission(HOME, None, meta())
    assert len(meter.collect_events()) == 1


@pytest.mark.parametrize(
    ("location", "customer", "expected"),
    [
        (Location(address=" "), None, {("location.address", "length")}),
        (Location(address="a" * 201), None, {("location.address", "length")}),
        (Location(address="x", latitude=1.0), None, {("location.latitude", "pair")}),
        (
            Location(address="x", latitude=91.0, longitude=181.0),
            None,
            {("location.latitude", "range"), ("location.longitude", "range")},
        ),
        (HOME, "bad account", {("customerAccount", "format")}),
        (Location(address=""), "", {("location.address", "length"), ("customerAccount", "format")}),
    ],
)
def test_commission_rules(
    location: Location, customer: str | None, expected: set[tuple[str, str]]
) -> None:
    meter = registered()

    with pytest.raises(ValidationFailed) as failed:
        meter.commission(location, customer, meta())

    assert {(e.field, e.rule) for e in failed.value.errors} == expected
    assert meter.status is MeterStatus.REGISTERED
    assert meter.collect_events() == []


# -- customers -------------------------------------------------------------------------


def test_assign_customer_records_the_previous_account() -> None:
    meter = registered()

    assert meter.assign_customer("ACC-1", meta()) is True
    assert meter.assign_customer("ACC-2", meta()) is True

    first, second = meter.collect_events()
    assert isinstance(first, Meter.CustomerAssigned)
    assert isinstance(second, Meter.CustomerAssigned)
    assert (first.customer_account, first.previous) == ("ACC-1", None)
    assert (second.customer_account, second.previous) == ("ACC-2", "ACC-1")
    assert meter.customer_account == "ACC-2"


def test_assigning_the_same_customer_is_a_no_op() -> None:
    meter = registered()
    meter.assign_customer("ACC-1", meta())
    meter.collect_events()
    version = meter.version

    assert meter.assign_customer("ACC-1", meta(key="k2", fingerprint="f2")) is False

    assert meter.collect_events() == []
    assert meter.version == version
    assert "k2" not in meter.commands


def test_assign_rejects_a_bad_account() -> None:
    meter = registered()

    with pytest.raises(ValidationFailed) as failed:
        meter.assign_customer("no spaces", meta())

    assert [(e.field, e.rule) for e in failed.value.errors] == [("customerAccount", "format")]
    assert meter.collect_events() == []


def test_unassign_clears_the_customer() -> None:
    meter = registered()
    meter.assign_customer("ACC-1", meta())
    meter.collect_events()

    meter.unassign_customer("moved out", meta())

    (event,) = meter.collect_events()
    assert isinstance(event, Meter.CustomerUnassigned)
    assert (event.previous, event.reason) == ("ACC-1", "moved out")
    assert meter.customer_account is None


def test_unassign_without_customer_is_a_conflict() -> None:
    meter = registered()

    with pytest.raises(Conflict, match="no customer"):
        meter.unassign_customer("moved out", meta())


@pytest.mark.parametrize("reason", ["", "   ", "r" * 501])
def test_unassign_needs_a_reason(reason: str) -> None:
    meter = registered()
    meter.assign_customer("ACC-1", meta())

    with pytest.raises(ValidationFailed) as failed:
        meter.unassign_customer(reason, meta())

    assert [(e.field, e.rule) for e in failed.value.errors] == [("reason", "length")]
    assert meter.customer_account == "ACC-1"


# -- connection profile ----------------------------------------------------------------


def test_change_connection_profile_replaces_only_the_connection() -> None:
    meter = registered()

    assert meter.change_connection_profile(HDLC, meta()) is True

    (event,) = meter.collect_events()
    assert isinstance(event, Meter.ConnectionProfileChanged)
    assert meter.spec == replace(SPEC, connection=HDLC)


def test_same_connection_profile_is_a_no_op() -> None:
    meter = registered()

    assert meter.change_connection_profile(ConnectionProfile(host="127.20.30.40"), meta()) is False
    assert meter.collect_events() == []


def test_invalid_connection_profile_is_refused() -> None:
    meter = registered()

    with pytest.raises(ValidationFailed) as failed:
        meter.change_connection_profile(ConnectionProfile(host="h", port=70000), meta())

    assert [e.field for e in failed.value.errors] == ["connection.port"]
    assert meter.spec == SPEC


# -- decommissioning -------------------------------------------------------------------


def test_decommission_takes_the_meter_out_of_service() -> None:
    meter = registered()

    meter.decommission("burnt out", meta())

    (event,) = meter.collect_events()
    assert isinstance(event, Meter.Decommissioned)
    assert meter.status is MeterStatus.DECOMMISSIONED
    assert meter.decommission_reason == "burnt out"
    assert meter.decommissioned_at == event.timestamp


def test_decommission_needs_a_reason() -> None:
    meter = registered()

    with pytest.raises(ValidationFailed):
        meter.decommission(" ", meta())
    assert meter.status is MeterStatus.REGISTERED


@pytest.mark.parametrize(
    "command",
    [
        lambda m: m.commission(HOME, None, meta()),
        lambda m: m.assign_customer("ACC-2", meta()),
        lambda m: m.assign_customer("ACC-1", meta()),
        lambda m: m.unassign_customer("moved out", meta()),
        lambda m: m.change_connection_profile(HDLC, meta()),
        lambda m: m.change_connection_profile(SPEC.connection, meta()),
        lambda m: m.decommission("again", meta()),
    ],
    ids=[
        "commission",
        "assign",
        "assign-same",
        "unassign",
        "change-profile",
        "same-profile",
        "decommission",
    ],
)
def test_a_decommissioned_meter_refuses_every_command(command: Callable[[Meter], object]) -> None:
    meter = registered()
    meter.assign_customer("ACC-1", meta())
    meter.decommission("burnt out", meta())
    meter.collect_events()

    with pytest.raises(Conflict, match="decommissioned"):
        command(meter)
    assert meter.collect_events() == []


# -- idempotency -----------------------------------------------------------------------


def test_seen_recognises_a_retry_and_refuses_a_reused_key() -> None:
    meter = Meter.register(SPEC, meta(key="k1", fingerprint="f1"))
    meter.assign_customer("ACC-1", meta(key="k2", fingerprint="f2"))

    assert meter.seen(meta(key="k1", fingerprint="f1")) is True
    assert meter.seen(meta(key="k2", fingerprint="f2")) is True
    assert meter.seen(meta(key="k3", fingerprint="f1")) is False
    assert meter.seen(meta()) is False
    with pytest.raises(Conflict, match="k1"):
        meter.seen(meta(key="k1", fingerprint="other"))


def test_remembered_keys_are_bounded_oldest_first() -> None:
    meter = Meter.register(SPEC, meta(key="k-0", fingerprint="f"))
    for i in range(1, MAX_REMEMBERED_KEYS + 1):
        meter.assign_customer(f"ACC-{i}", meta(key=f"k-{i}", fingerprint="f"))

    assert len(meter.commands) == MAX_REMEMBERED_KEYS
    assert meter.seen(meta(key="k-0", fingerprint="f")) is False
    assert meter.seen(meta(key="k-1", fingerprint="f")) is True
    assert meter.seen(meta(key=f"k-{MAX_REMEMBERED_KEYS}", fingerprint="f")) is True


# -- events and replay -----------------------------------------------------------------


def lifecycle() -> tuple[Meter, list[EventMeta]]:
    """A meter taken through every command once, with the meta each command carried."""
    metas = [
        meta(f"corr-{i}", key=f"key-{i}", fingerprint=f"fp-{i}", actor=f"user-{i}")
        for i in range(7)
    ]
    meter = Meter.register(SPEC, metas[0])
    meter.assign_customer("ACC-1", metas[1])
    meter.commission(HOME, "ACC-2", metas[2])
    meter.unassign_customer("moved out", metas[3])
    meter.assign_customer("ACC-3", metas[4])
    meter.change_connection_profile(HDLC, metas[5])
    meter.decommission("burnt out", metas[6])
    return meter, metas


def test_every_event_carries_the_commands_meta() -> None:
    meter, metas = lifecycle()

    events = meter.collect_events()

    assert [e.meta for e in events] == metas  # type: ignore[attr-defined]
    assert [e.meta.actor for e in events] == [f"user-{i}" for i in range(7)]  # type: ignore[attr-defined]


def test_replaying_the_events_rebuilds_the_same_meter() -> None:
    meter, _ = lifecycle()
    events = meter.collect_events()

    rebuilt = reduce(lambda aggregate, event: event.mutate(aggregate), events, None)

    assert isinstance(rebuilt, Meter)
    assert state(rebuilt) == state(meter)
    assert rebuilt.version == len(events) == 7


def test_replay_matches_the_meter_after_every_command() -> None:
    meter = Meter.register(SPEC, meta())
    replayed: Any = None
    for command in (
        lambda: None,
        lambda: meter.assign_customer("ACC-1", meta()),
        lambda: meter.commission(HOME, None, meta()),
        lambda: meter.change_connection_profile(HDLC, meta()),
        lambda: meter.unassign_customer("moved out", meta()),
    ):
        command()
        for event in meter.collect_events():
            replayed = event.mutate(replayed)
        assert state(replayed) == state(meter)
