"""Audit reads over an in-memory event store, and the auditor's place in the role policy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import CanMutateAggregate

from commands.audit import history, resolve_id, state_at
from commands.context import Actor, CommandContext, Role
from commands.meters import MeterRegistry
from commands.policy import COMMAND_ROLES, READ_ROLES, authorize, authorize_audit, may_read_meter
from domain.errors import Forbidden, NotFound, ValidationFailed
from domain.meter import Meter, meter_id
from domain.values import ConnectionProfile, Location, MeterSpec, Transport

SPEC = MeterSpec(
    serial="AUD-0001",
    manufacturer="Kaifa",
    model="MA309M",
    firmware="1.0.2",
    phases=3,
    region="North",
    area="Zone A",
    connection=ConnectionProfile(host="10.20.30.40"),
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
        id_, ConnectionProfile(host="m7.grid", transport=Transport.HDLC), ctx("cat")
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
