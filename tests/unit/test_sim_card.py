"""SIM card rules: ICCID with Luhn, field formats, the status lifecycle and the meter slot."""

from __future__ import annotations

from datetime import date

import pytest

from domain.errors import Conflict, ValidationFailed
from domain.meta import EventMeta
from domain.sim_card import MeterSimSlot, SimCard, sim_id
from domain.sim_rules import SimSpec, SimStatus, luhn_digit, luhn_valid

META = EventMeta(actor="op", correlation_id="c-1")


def iccid(body: str = "894450001234567890") -> str:
    """A valid ICCID: ``body`` and its Luhn check digit."""
    return body + luhn_digit(body)


def card(**fields: object) -> SimCard:
    spec = SimSpec(**{"iccid": iccid(), "provider": "Vodafone", **fields})  # type: ignore[arg-type]
    return SimCard.add(spec, META)


def rules(spec: SimSpec) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as failed:
        spec.check()
    return [(e.field, e.rule) for e in failed.value.errors]


def test_luhn_matches_known_numbers() -> None:
    assert luhn_valid("79927398713")  # the textbook example
    assert not luhn_valid("79927398710")
    assert luhn_digit("7992739871") == "3"
    assert luhn_valid("89014103211118510720")  # a published ICCID


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("8944500012345678", "format"),  # too short
        ("894450001234567890123", "format"),  # too long
        ("89445000123456789OX", "format"),  # not digits
        ("7" + iccid()[1:], "prefix"),
        (iccid()[:-1] + str((int(iccid()[-1]) + 1) % 10), "luhn"),
    ],
)
def test_iccid_rules_are_named(value: str, rule: str) -> None:
    assert rules(SimSpec(iccid=value, provider="Vodafone")) == [("iccid", rule)]


def test_luhn_error_says_the_right_check_digit() -> None:
    wrong = iccid()[:-1] + str((int(iccid()[-1]) + 1) % 10)
    with pytest.raises(ValidationFailed) as failed:
        SimSpec(iccid=wrong, provider="X").check()
    assert f"should be {iccid()[-1]}" in failed.value.errors[0].message


def test_every_field_rule_is_reported_at_once() -> None:
    spec = SimSpec(
        iccid=iccid(),
        provider="\x00",
        sim_number="bad label!",
        imsi="12345",
        msisdn="0123",
        apn="-x",
        ip_address="300.1.1.1",
        data_limit_mb=-1,
    )
    assert sorted(rules(spec)) == [
        ("apn", "format"),
        ("dataLimit", "non-negative"),
        ("imsi", "format"),
        ("ipAddress", "format"),
        ("msisdn", "format"),
        ("provider", "format"),
        ("simNumber", "format"),
    ]


def test_a_card_is_normalized_and_starts_in_stock() -> None:
    spaced = " ".join([iccid()[:4], iccid()[4:]])
    sim = card(iccid=spaced, ip_address="::0001", imsi="234150123456789")
    assert sim.iccid == iccid()
    assert sim.id == sim_id(iccid())
    assert sim.ip_address == "::1"
    assert sim.status is SimStatus.IN_STOCK


def test_lifecycle_active_suspended_and_back_then_terminated() -> None:
    sim = card()
    assert sim.activate(META, date(2026, 1, 2))
    assert sim.activation_date == date(2026, 1, 2)
    assert not sim.activate(META)  # already active: nothing recorded
    assert sim.suspend("unpaid", META)
    assert sim.status.value == "SUSPENDED"
    assert sim.resume(META)
    assert sim.status.value == "ACTIVE"
    assert sim.activation_date == date(2026, 1, 2)  # resuming keeps the first activation
    assert sim.terminate("contract ended", META)
    assert sim.status is SimStatus.TERMINATED
    names = [type(e).__name__ for e in sim.collect_events()]
    assert names == ["AddedToStock", "Activated", "Suspended", "Activated", "Terminated"]


@pytest.mark.parametrize(
    ("prepare", "act", "words"),
    [
        ([], lambda s: s.suspend("x", META), "IN_STOCK → SUSPENDED"),
        ([], lambda s: s.resume(META), "IN_STOCK → ACTIVE"),
        (["terminate"], lambda s: s.activate(META), "TERMINATED → ACTIVE"),
        (["terminate"], lambda s: s.suspend("x", META), "TERMINATED → SUSPENDED"),
    ],
)
def test_illegal_transitions_name_both_states(prepare: list[str], act, words: str) -> None:  # type: ignore[no-untyped-def]
    sim = card()
    if "terminate" in prepare:
        sim.terminate("lost", META)
    with pytest.raises(Conflict) as refused:
        act(sim)
    assert words in refused.value.message


def test_a_terminated_card_cannot_be_updated() -> None:
    sim = card()
    sim.terminate("lost", META)
    with pytest.raises(Conflict, match="terminated"):
        sim.update_service(META, apn="m2m.example")


def test_update_changes_only_given_fields_and_checks_them() -> None:
    sim = card(apn="iot.example", data_limit_mb=50)
    assert sim.update_service(META, data_limit_mb=100)
    assert (sim.apn, sim.data_limit_mb) == ("iot.example", 100)
    assert not sim.update_service(META, data_limit_mb=100)
    with pytest.raises(ValidationFailed) as failed:
        sim.update_service(META, ip_address="not an ip", data_limit_mb=-5)
    assert [(e.field, e.rule) for e in failed.value.errors] == [
        ("ipAddress", "format"),
        ("dataLimit", "non-negative"),
    ]


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (SimStatus.IN_STOCK, "activate it first"),
        (SimStatus.SUSPENDED, "resume it first"),
        (SimStatus.TERMINATED, "never returns"),
    ],
)
def test_only_an_active_card_is_installed(status: SimStatus, hint: str) -> None:
    sim = card()
    if status is SimStatus.SUSPENDED:
        sim.activate(META)
        sim.suspend("x", META)
    elif status is SimStatus.TERMINATED:
        sim.terminate("x", META)
    with pytest.raises(Conflict, match=hint):
        sim.install("M-1", META)


def test_one_meter_per_card_and_no_termination_while_installed() -> None:
    sim = card()
    sim.activate(META)
    assert sim.install("M-1", META)
    assert not sim.install("m-1", META)  # same meter (serials are case-insensitive)
    with pytest.raises(Conflict, match="already installed in meter M-1"):
        sim.install("M-2", META)
    with pytest.raises(Conflict, match="remove it first"):
        sim.terminate("lost", META)
    sim.remove("swap", META)
    assert sim.meter_serial is None
    assert sim.terminate("lost", META)


def test_one_card_per_meter_slot() -> None:
    slot = MeterSimSlot(meter_serial="M-1", meta=META)
    slot.hold(iccid(), META)
    slot.hold(iccid(), META)  # the same card again changes nothing
    other = iccid("894450001234567891")
    with pytest.raises(Conflict, match=f"already has SIM {iccid()}"):
        slot.hold(other, META)
    assert slot.release("swap", META) == iccid()
    with pytest.raises(Conflict, match="no SIM installed"):
        slot.release("again", META)
    slot.hold(other, META)
    assert [type(e).__name__ for e in slot.collect_events()] == [
        "Created",
        "SimInstalled",
        "SimRemoved",
        "SimInstalled",
    ]


def test_every_event_carries_actor_and_correlation() -> None:
    sim = card()
    sim.activate(META)
    for e in sim.collect_events():
        assert e.meta == META  # type: ignore[attr-defined]
