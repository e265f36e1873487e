"""Text at the door: free-text and identifier rules, and text made printable for the record."""

from __future__ import annotations

import json
import unicodedata
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.notify.result import short
from domain.alert import Alert, AlertSpec, AlertType, Severity
from domain.api_key import ApiKey
from domain.errors import Collector, ValidationFailed
from domain.meta import EventMeta
from domain.notifications import SubscriptionDraft, validate
from domain.pricing import TariffSpec
from domain.remote_commands import check_reason
from domain.tariff import Tariff
from domain.text import check_text, printable, refused_character
from domain.values import ConnectionProfile, Location, MeterSpec, check_region
from processes.notification_intake import customer_view

META = EventMeta(actor="t", correlation_id="c")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def rules(check: object) -> set[tuple[str, str]]:
    """(field, rule) of every error ``check()`` raises."""
    assert callable(check)
    with pytest.raises(ValidationFailed) as failed:
        check()
    return {(e.field, e.rule) for e in failed.value.errors}


@pytest.mark.parametrize("char", ["\x00", "\x01", "\r", "\x1b", "\x7f", "\x85", "\ud800"])
def test_control_characters_and_surrogates_are_refused_in_free_text(char: str) -> None:
    errors = Collector()
    check_text(errors, "note", f"a{char}b", max_chars=10, multiline=True)
    assert [(e.field, e.rule) for e in errors.errors] == [("note", "characters")]
    assert f"U+{ord(char):04X} at position 2" in errors.errors[0].message


def test_tab_and_newline_only_in_multi_line_text() -> None:
    assert refused_character("a\tb\nc", multiline=True) is None
    assert refused_character("a\tb", multiline=False) == "U+0009 at position 2"
    assert refused_character("Zürich, Ørsted ☀ 東京") is None


@given(st.text())
def test_printable_text_holds_nothing_refused_and_keeps_the_rest(text: str) -> None:
    clean = printable(text)
    assert refused_character(clean) is None
    clean.encode("utf-8")  # storable anywhere
    if refused_character(text) is None:
        assert clean == text


@given(st.text())
def test_every_string_is_either_clean_or_refused_by_the_meter_rules(text: str) -> None:
    spec = MeterSpec(
        serial="SN-1",
        manufacturer="Acme",
        model="M1",
        firmware=text,
        phases=1,
        region="North",
        area="A",
        connection=ConnectionProfile(host="127.0.0.1"),
        sim_card=text or None,
        meter_type=text or None,
    )
    try:
        spec.check()
    except ValidationFailed:
        return
    for value in (spec.firmware, spec.sim_card, spec.meter_type):
        assert value is None or not any(unicodedata.category(c) in ("Cc", "Cs") for c in value)


def test_identifiers_follow_their_documented_sets() -> None:
    base = MeterSpec(
        serial="SN-1",
        manufacturer="Acme",
        model="M1",
        firmware="1.0",
        phases=1,
        region="Île-de-France",
        area="Zone A",
        connection=ConnectionProfile(host="127.0.0.1"),
        concentrator_id="DC-0042",
        sim_card="8944500012345678901",
    )
    base.check()
    bad = MeterSpec(
        **{
            **{f: getattr(base, f) for f in base.__struct_fields__},
            "concentrator_id": "DC 42",
            "sim_card": "89\x00",
            "region": "North\x00",
        }
    )
    assert rules(bad.check) == {
        ("concentratorId", "format"),
        ("simCard", "format"),
        ("region", "format"),
    }
    errors = Collector()
    check_region(errors, "  Zone A ")
    assert errors.errors == []


def test_reasons_notes_and_addresses_refuse_control_characters() -> None:
    errors = Collector()
    Location(address="1 Grid Rd\nFlat 2").check(errors)
    Location(address="1 Grid Rd\x00").check(errors)
    assert [(e.field, e.rule) for e in errors.errors] == [("location.address", "characters")]

    spec = AlertSpec(
        alert_type=AlertType.THRESHOLD,
        severity=Severity.LOW,
        region="North",
        dedup_key="K",
        message="m",
    )
    alert = Alert.open(spec, 1, NOW, META)
    assert rules(lambda: alert.resolve(NOW, "done\x00", META)) == {("note", "characters")}
    alert.resolve(NOW, "", META)  # a note may be empty

    tariff = Tariff.create(
        TariffSpec(region="North", currency="EUR", base_price=Decimal("0.2"), timezone="UTC"),
        META,
    )
    later = datetime(2027, 1, 1, tzinfo=UTC)
    assert rules(
        lambda: tariff.apply_override(Decimal("0.3"), "x\x00", "admin", later, NOW, META)
    ) == {("reason", "characters")}
    assert rules(
        lambda: tariff.apply_override(Decimal("0.3"), "storm", "ad\x00min", later, NOW, META)
    ) == {("author", "characters")}
    assert rules(
        lambda: tariff.apply_override(Decimal("1e999"), "storm", "admin", later, NOW, META)
    ) == {("price", "range")}

    key = ApiKey.create(
        "abcdefghij",
        "gateway",
        [],
        ["ingest"],
        uuid.uuid4(),
        META,
        known_roles=frozenset(),
        known_scopes=frozenset({"ingest"}),
    )
    assert rules(lambda: key.revoke("leak\x00", META)) == {("reason", "characters")}
    assert rules(
        lambda: validate(
            SubscriptionDraft(
                channel="EMAIL", email="a@example.com", kinds=["ALERT_RAISED"], regions=["N\x00"]
            )
        )
    ) == {("regions[0]", "format")}


def test_a_meter_sent_failure_reason_is_recorded_printable() -> None:
    assert check_reason("meter said: BAD\x00NAME\x1b[31m") == "meter said: BAD\\x00NAME\\x1b[31m"
    assert check_reason("\ud800") == "\\ud800"


def test_customers_get_tariff_events_without_reason_author_or_actor() -> None:
    event = {
        "specversion": "1.0",
        "id": "e",
        "type": "hes.tariff.OverrideApplied.v1",
        "actor": "admin-1",
        "correlationid": "req-1",
        "data": {"price": "0.4", "reason": "storm desk", "author": "admin-1", "expires_at": "x"},
    }
    seen = json.loads(customer_view(json.dumps(event).encode()))
    assert seen == {
        "specversion": "1.0",
        "id": "e",
        "type": "hes.tariff.OverrideApplied.v1",
        "data": {"price": "0.4", "expires_at": "x"},
    }


def test_a_receivers_reply_is_recorded_printable() -> None:
    assert short("HTTP 500: bad\x00thing\r\n  here") == "HTTP 500: bad\\x00thing here"
