"""The Customer aggregate and its sealed personal data: rules, events, replay, erasure (no I/O)."""

from __future__ import annotations

from datetime import date

import pytest

from commands.codec import MsgspecMapper
from domain.customer import Customer, CustomerProfile, CustomerStatus, CustomerType, customer_id
from domain.errors import Conflict, ValidationFailed
from domain.meta import EventMeta
from domain.personal_data import (
    ERASED,
    KeyUnavailable,
    PersonalData,
    new_data_key,
    open_sealed,
    seal,
    unwrap_key,
    wrap_key,
)

META = EventMeta(actor="ann", correlation_id="corr-1")
ANN = PersonalData(
    name="Ann Smith", address="1 Main St\nTown", phone="+44 20 7946 0000", email="ann@example.org"
)
PROFILE = CustomerProfile(
    area="North",
    customer_type=CustomerType.COMMERCIAL,
    tariff_plan="TOU-1",
    connection_date=date(2024, 1, 2),
)


def opened(key: bytes) -> Customer:
    """A new customer ACC-1 under ``key``."""
    return Customer.open("ACC-1", ANN, PROFILE, key, META)


def replay(customer: Customer) -> Customer:
    """The customer rebuilt from its events after a store round trip."""
    mapper = MsgspecMapper()
    events = [mapper.to_domain_event(mapper.to_stored_event(e)) for e in customer.collect_events()]
    state: Customer | None = None
    for e in events:
        state = e.mutate(state)  # type: ignore[attr-defined]
    assert state is not None
    return state


def status(customer: Customer) -> CustomerStatus:
    """The customer's status (read through a call, so type narrowing does not stick)."""
    return customer.status


def field_rules(exc: pytest.ExceptionInfo[ValidationFailed]) -> set[tuple[str, str]]:
    """The (field, rule) pairs a validation error names."""
    return {(e.field, e.rule) for e in exc.value.errors}


def test_personal_data_is_sealed_in_every_event_and_opens_with_the_key() -> None:
    key = new_data_key()
    customer = opened(key)
    customer.update_contact(PersonalData(name="Ann Jones", address="2 High St"), "South", key, META)
    mapper = MsgspecMapper()
    stored = [mapper.to_stored_event(e) for e in customer.collect_events()]
    for event in stored:
        for value in ("Ann", "Main St", "7946", "example.org", "Jones", "High St"):
            assert value.encode() not in event.state
    assert customer.personal(key) == PersonalData(name="Ann Jones", address="2 High St")
    assert customer.profile.area == "South"


def test_replay_without_the_key_shows_personal_fields_erased_and_keeps_the_rest() -> None:
    customer = replay(opened(new_data_key()))
    shown = customer.personal(None)
    assert (shown.name, shown.address, shown.phone, shown.email) == (ERASED,) * 4
    assert customer.account == "ACC-1"
    assert customer.profile == PROFILE
    assert customer.id == customer_id("ACC-1")


def test_a_sealed_value_does_not_open_under_another_key_or_account() -> None:
    key = new_data_key()
    sealed = seal(key, "ACC-1", ANN)
    assert open_sealed(key, "ACC-1", sealed) == ANN
    with pytest.raises(KeyUnavailable):
        open_sealed(new_data_key(), "ACC-1", sealed)
    with pytest.raises(KeyUnavailable):
        open_sealed(key, "ACC-2", sealed)
    with pytest.raises(KeyUnavailable):
        open_sealed(None, "ACC-1", sealed)


def test_data_key_wrapping_is_bound_to_master_key_and_account() -> None:
    master, data = new_data_key(), new_data_key()
    wrapped = wrap_key(master, "ACC-1", data)
    assert unwrap_key(master, "ACC-1", wrapped) == data
    with pytest.raises(KeyUnavailable):
        unwrap_key(new_data_key(), "ACC-1", wrapped)
    with pytest.raises(KeyUnavailable):
        unwrap_key(master, "ACC-2", wrapped)


def test_invalid_fields_are_named_with_their_rule() -> None:
    bad = PersonalData(name="", address="x\x00", phone="call me", email="ann@")
    with pytest.raises(ValidationFailed) as exc:
        Customer.open(
            "bad account!", bad, CustomerProfile(area="", tariff_plan="\x07"), new_data_key(), META
        )
    assert field_rules(exc) == {
        ("accountNumber", "format"),
        ("name", "length"),
        ("address", "characters"),
        ("phone", "format"),
        ("email", "format"),
        ("area", "format"),
        ("tariffPlan", "format"),
    }


def test_lifecycle_suspend_reactivate_close_and_refusals() -> None:
    key = new_data_key()
    customer = opened(key)
    with pytest.raises(Conflict, match="only suspended"):
        customer.reactivate(META)
    customer.suspend("unpaid bills", META)
    assert customer.status is CustomerStatus.SUSPENDED
    with pytest.raises(Conflict, match="only active"):
        customer.suspend("again", META)
    customer.reactivate(META)
    with pytest.raises(ValidationFailed) as exc:
        customer.close("", 0, META)
    assert field_rules(exc) == {("reason", "length")}
    customer.close("moved out", 2, META)
    assert status(customer) is CustomerStatus.CLOSED
    with pytest.raises(Conflict, match="closed"):
        customer.change_plan(CustomerType.PUBLIC, "X", META)
    with pytest.raises(Conflict, match="closed"):
        customer.update_contact(ANN, "North", key, META)
    events = customer.collect_events()
    assert [type(e).__name__ for e in events] == [
        "Created",
        "Suspended",
        "Reactivated",
        "Closed",
    ]
    assert all(e.meta.actor == "ann" and e.meta.correlation_id == "corr-1" for e in events)  # type: ignore[attr-defined]


def test_unchanged_contact_or_plan_records_nothing() -> None:
    key = new_data_key()
    customer = opened(key)
    assert customer.update_contact(ANN, "North", key, META) is False
    assert customer.change_plan(CustomerType.COMMERCIAL, "TOU-1", META) is False
    assert customer.change_plan(CustomerType.INDUSTRIAL, "TOU-1", META) is True
    assert customer.profile.customer_type is CustomerType.INDUSTRIAL


def test_erasure_is_recorded_once_with_a_reason_and_hides_personal_data() -> None:
    key = new_data_key()
    customer = opened(key)
    with pytest.raises(ValidationFailed):
        customer.erase("  ", META)
    assert customer.erase("GDPR art. 17 request", META) is True
    assert customer.erase("again", META) is False
    assert customer.erased and customer.status is CustomerStatus.CLOSED
    assert customer.personal(key).name == ERASED  # even with the key at hand
    rebuilt = replay(customer)
    assert rebuilt.erased and rebuilt.personal(None).email == ERASED
