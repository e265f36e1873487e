"""Audit reads over an in-memory event store, and the auditor's place in the role policy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import CanMutateAggregate

from commands.alerts import AlertDesk
from commands.api_keys import ApiKeyRegistry
from commands.audit import App, history, history_of, locate, resolve_id, state_at, state_of
from commands.audit_verify import LOGS, parse_anchor
from commands.context import Actor, CommandContext, Role
from commands.customers import CustomerBook
from commands.fleet import FleetOperations
from commands.meters import MeterRegistry
from commands.operations import OperationsLog
from commands.policy import COMMAND_ROLES, READ_ROLES, authorize, authorize_audit, may_read_meter
from commands.sims import SimInventory
from commands.tariffs import TariffBook
from domain.alert import AlertType, Severity, alert_id, series_id
from domain.detection import AlertDecision, Verdict
from domain.errors import Forbidden, NotFound, ValidationFailed
from domain.meter import Meter, meter_id
from domain.pricing import TariffSpec
from domain.tariff import tariff_id
from domain.values import ConnectionProfile, Location, MeterSpec, Transport

SPEC = MeterSpec(
    serial="AUD-0001",
    manufacturer="Kaifa",
    model="MA309M",
    firmware="1.0.2",
    phases=3,
    region="North",
    area="Zone A",
    connection=ConnectionProfile(host="127.20.30.40"),
)


def actor(subject: str, *roles: Role) -> Actor:
    """An actor with these roles."""
    return Actor(subject=subject, roles=frozenset(roles))


def ctx(subject: str, role: Role = Role.OPERATOR) -> CommandContext:
    """Command context of one caller, with a correlation id naming them."""
    return CommandContext(actor=actor(subject, role), correlation_id=f"corr-{subject}")


@pytest.fixture
def registry() -> Iterator[MeterRegistry]:
    """A meter registry over the in-memory store, with one meter taken through six events."""
    app = MeterRegistry(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    id_ = app.register_meter(SPEC, ctx("ann")).meter.id
    app.commission_meter(id_, Location(address="1 Grid Rd"), "ACC-1", ctx("bob"))
    app.change_connection_profile(
        id_, ConnectionProfile(host="m7.grid.example", transport=Transport.HDLC), ctx("cat")
    )
    app.assign_customer(id_, "ACC-2", ctx("dan"))
    app.unassign_customer(id_, "moved out", ctx("eve"))
    app.decommission_meter(id_, "burnt out", ctx("fay", Role.ADMIN))
    yield app
    app.close()


def state(meter: Meter) -> dict[str, Any]:
    """Everything an aggregate holds, but the events not yet saved."""
    return {k: v for k, v in vars(meter).items() if k != "_pending_events"}


def stored(registry: MeterRegistry, id_: UUID) -> list[CanMutateAggregate[UUID]]:
    """The meter's stored events, straight from the event store."""
    return cast("list[CanMutateAggregate[UUID]]", list(registry.events.get(id_)))


def replayed(app: MeterRegistry, id_: UUID, n: int) -> Meter:
    """The meter folded by hand from its first ``n`` stored events."""
    meter: Any = None
    for event in stored(app, id_)[:n]:
        meter = event.mutate(meter)
    assert isinstance(meter, Meter)
    return meter


# -- policy ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(COMMAND_ROLES))
def test_no_command_is_open_to_the_auditor(command: str) -> None:
    assert Role.AUDITOR not in COMMAND_ROLES[command]
    with pytest.raises(Forbidden):
        authorize(actor("audrey", Role.AUDITOR), command)


def test_auditor_reads_every_meter() -> None:
    audrey = actor("audrey", Role.AUDITOR)
    assert Role.AUDITOR in READ_ROLES
    assert may_read_meter(audrey, None)
    assert may_read_meter(audrey, "ACC-OTHER")


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ADMIN])
def test_audit_is_open_to_auditors_and_admins(role: Role) -> None:
    authorize_audit(actor("someone", role))


@pytest.mark.parametrize("roles", [(Role.VIEWER,), (Role.OPERATOR,), (Role.CUSTOMER,), ()])
def test_audit_is_closed_to_everyone_else(roles: tuple[Role, ...]) -> None:
    with pytest.raises(Forbidden, match="audit needs role admin or auditor"):
        authorize_audit(actor("someone", *roles))


# -- history --------------------------------------------------------------------------


def test_history_lists_every_event_in_order_with_its_command_metadata(
    registry: MeterRegistry,
) -> None:
    entries = history(registry, meter_id(SPEC.serial))

    assert [(e.version, e.type, e.actor) for e in entries] == [
        (1, "Registered", "ann"),
        (2, "Commissioned", "bob"),
        (3, "ConnectionProfileChanged", "cat"),
        (4, "CustomerAssigned", "dan"),
        (5, "CustomerUnassigned", "eve"),
        (6, "Decommissioned", "fay"),
    ]
    assert [e.correlation_id for e in entries] == [f"corr-{e.actor}" for e in entries]
    assert all(e.position is None for e in entries)  # the in-memory store has no positions
    assert entries[0].payload["spec"]["serial"] == SPEC.serial
    assert entries[1].payload == {
        "location": {"address": "1 Grid Rd", "latitude": None, "longitude": None},
        "customer_account": "ACC-1",
    }
    assert entries[3].payload == {"customer_account": "ACC-2", "previous": "ACC-1"}
    assert all("meta" not in e.payload for e in entries)


def test_history_window_is_half_open_and_limited(registry: MeterRegistry) -> None:
    id_ = meter_id(SPEC.serial)
    times = [e.time for e in history(registry, id_)]

    window = history(registry, id_, start=times[1], end=times[4])
    assert [e.version for e in window] == [2, 3, 4]
    assert [e.version for e in history(registry, id_, limit=2)] == [1, 2]
    assert history(registry, id_, end=times[0]) == []


def test_history_refuses_bad_input_and_unknown_ids(registry: MeterRegistry) -> None:
    id_ = meter_id(SPEC.serial)
    now = datetime.now().astimezone()
    with pytest.raises(NotFound):
        history(registry, uuid4())
    with pytest.raises(ValidationFailed, match="UTC offset"):
        history(registry, id_, start=datetime(2025, 1, 1))
    with pytest.raises(ValidationFailed, match="after from"):
        history(registry, id_, start=now, end=now)
    with pytest.raises(ValidationFailed, match="between 1 and"):
        history(registry, id_, limit=0)


def test_ids_resolve_from_uuid_or_serial() -> None:
    assert resolve_id(SPEC.serial.lower()) == meter_id(SPEC.serial)
    assert resolve_id(str(meter_id(SPEC.serial))) == meter_id(SPEC.serial)


# -- state at -------------------------------------------------------------------------


def test_state_at_every_version_and_time_equals_the_hand_replay(registry: MeterRegistry) -> None:
    id_ = meter_id(SPEC.serial)
    events = stored(registry, id_)
    for n, event in enumerate(events, start=1):
        expected = state(replayed(registry, id_, n))
        assert state(state_at(registry, id_, version=n)) == expected
        assert state(state_at(registry, id_, at=event.timestamp)) == expected
        just_before_next = (
            events[n].timestamp - timedelta(microseconds=1) if n < len(events) else datetime.max
        ).replace(tzinfo=event.timestamp.tzinfo)
        assert state(state_at(registry, id_, at=just_before_next)) == expected


def test_state_at_refuses_what_did_not_exist(registry: MeterRegistry) -> None:
    id_ = meter_id(SPEC.serial)
    first = stored(registry, id_)[0]
    with pytest.raises(NotFound, match="did not exist yet"):
        state_at(registry, id_, at=first.timestamp - timedelta(microseconds=1))
    with pytest.raises(NotFound, match="no version 7"):
        state_at(registry, id_, version=7)
    with pytest.raises(NotFound):
        state_at(registry, uuid4(), version=1)
    with pytest.raises(NotFound):
        state_at(registry, uuid4(), at=first.timestamp)


def test_state_at_wants_exactly_one_of_at_or_version(registry: MeterRegistry) -> None:
    id_ = meter_id(SPEC.serial)
    now = datetime.now().astimezone()
    with pytest.raises(ValidationFailed, match="exactly one"):
        state_at(registry, id_)
    with pytest.raises(ValidationFailed, match="exactly one"):
        state_at(registry, id_, at=now, version=1)
    with pytest.raises(ValidationFailed, match="1 or more"):
        state_at(registry, id_, version=0)
    with pytest.raises(ValidationFailed, match="UTC offset"):
        state_at(registry, id_, at=datetime(2025, 1, 1))


# -- every application ----------------------------------------------------------------


@pytest.fixture
def apps(registry: MeterRegistry) -> Iterator[tuple[App, ...]]:
    """Meters (the registry above), a tariff of region AUDIT-R and a resolved alert, in memory."""
    env = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    tariffs, alerts = TariffBook(env=env), AlertDesk(env=env)
    spec = TariffSpec(region="AUDIT-R", currency="EUR", base_price=Decimal("0.25"), timezone="UTC")
    tariffs.create_tariff(spec, ctx("ada", Role.ADMIN))
    tariffs.change_base_price("AUDIT-R", Decimal("0.30"), ctx("ben", Role.ADMIN))
    decision = AlertDecision(
        verdict=Verdict.RAISE,
        alert_type=AlertType.TAMPER,
        severity=Severity.CRITICAL,
        region="North",
        dedup_key="TAMPER:AUD-0001",
        message="cover opened",
        observed_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    id_ = alerts.raise_or_recur(decision, ctx("system", Role.ADMIN)).alert.id
    alerts.acknowledge(id_, ctx("olga"))
    alerts.resolve(id_, "cover closed", ctx("oscar"))
    yield registry, tariffs, alerts
    tariffs.close()
    alerts.close()


def test_the_chained_logs_are_the_applications() -> None:
    names = (MeterRegistry.name, TariffBook.name, AlertDesk.name, ApiKeyRegistry.name)
    others = (SimInventory.name, OperationsLog.name, CustomerBook.name, FleetOperations.name)
    assert (*names, *others) == LOGS


def test_ids_are_located_in_the_log_that_holds_them(apps: tuple[App, ...]) -> None:
    registry, tariffs, alerts = apps
    alert = alert_id("TAMPER:AUD-0001", 1)
    assert locate(apps, SPEC.serial) == (registry, meter_id(SPEC.serial))
    assert locate(apps, "audit-r") == (tariffs, tariff_id("AUDIT-R"))
    assert locate(apps, str(tariff_id("AUDIT-R"))) == (tariffs, tariff_id("AUDIT-R"))
    assert locate(apps, str(alert)) == (alerts, alert)
    assert locate(apps, "TAMPER:AUD-0001") == (alerts, series_id("TAMPER:AUD-0001"))
    with pytest.raises(NotFound, match="no aggregate with id NOWHERE"):
        locate(apps, "NOWHERE")
    with pytest.raises(NotFound):
        locate(apps, str(uuid4()))


def test_history_of_an_alert_names_its_log_and_type(apps: tuple[App, ...]) -> None:
    entries = history_of(apps, str(alert_id("TAMPER:AUD-0001", 1)))
    assert [(e.log, e.aggregate_type, e.version, e.type, e.actor) for e in entries] == [
        ("alerts", "Alert", 1, "Raised", "system"),
        ("alerts", "Alert", 2, "Acknowledged", "olga"),
        ("alerts", "Alert", 3, "Resolved", "oscar"),
    ]
    assert entries[2].payload["note"] == "cover closed"
    series = history_of(apps, "TAMPER:AUD-0001")
    assert [(e.aggregate_type, e.type) for e in series] == [
        ("AlertSeries", "Started"),
        ("AlertSeries", "Opened"),
        ("AlertSeries", "Closed"),
    ]
    meters = history_of(apps, SPEC.serial, limit=1)
    assert [(e.log, e.aggregate_type, e.type) for e in meters] == [
        ("meters", "Meter", "Registered")
    ]


def test_history_of_checks_its_input_before_looking(apps: tuple[App, ...]) -> None:
    with pytest.raises(ValidationFailed, match="between 1 and"):
        history_of(apps, "NOWHERE", limit=0)


def test_state_of_a_tariff_at_each_version(apps: tuple[App, ...]) -> None:
    first = state_of(apps, "AUDIT-R", version=1)
    assert (first.log, first.aggregate_type, first.version) == ("tariffs", "Tariff", 1)
    assert first.state["base_price"] == "0.25" and first.state["region"] == "AUDIT-R"
    assert "commands" not in first.state and not any(k.startswith("_") for k in first.state)
    second = state_of(apps, "AUDIT-R", at=datetime.now(UTC))
    assert (second.version, second.state["base_price"]) == (2, "0.30")
    assert second.created_on == first.created_on and second.modified_on > first.modified_on
    with pytest.raises(ValidationFailed, match="exactly one"):
        state_of(apps, "NOWHERE")
    with pytest.raises(NotFound, match=r"tariff .* has no version 3"):
        state_of(apps, "AUDIT-R", version=3)


def test_state_of_an_alert_and_a_meter_as_json(apps: tuple[App, ...]) -> None:
    alert = state_of(apps, str(alert_id("TAMPER:AUD-0001", 1)), version=2)
    assert (alert.aggregate_type, alert.state["status"], alert.state["acknowledged_by"]) == (
        "Alert",
        "ACKNOWLEDGED",
        "olga",
    )
    meter = state_of(apps, SPEC.serial, version=2)
    assert (meter.log, meter.aggregate_type, meter.state["customer_account"]) == (
        "meters",
        "Meter",
        "ACC-1",
    )
    with pytest.raises(NotFound, match="is not a meter"):
        state_at(apps[1], tariff_id("AUDIT-R"), version=1)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("tariffs:7:" + "ab" * 32, (("tariffs", 7), bytes.fromhex("ab" * 32))),
        ("alerts:12:" + "00" * 32, (("alerts", 12), bytes(32))),
        ("48213:" + "ff" * 32, (("meters", 48213), bytes.fromhex("ff" * 32))),  # before logs
    ],
)
def test_anchors_name_a_log_or_are_meters(text: str, parsed: tuple[tuple[str, int], bytes]) -> None:
    assert parse_anchor(text) == parsed


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("readings:1:" + "00" * 32, "log must be one of meters, tariffs, alerts"),
        ("meters:x:" + "00" * 32, "position is a number"),
        ("meters:1:zz", "position is a number and the digest hex"),
        ("meters:1:abcd", "64 hex characters"),
        ("meters:0:" + "00" * 32, "1 or more"),
        ("meters", "LOG:POSITION:HEXDIGEST"),
        ("a:b:c:d", "LOG:POSITION:HEXDIGEST"),
    ],
)
def test_bad_anchors_are_refused_with_the_rule(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_anchor(text)
