"""Decoding of telemetry requests: both wire forms, conversions and every error path."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from commands.telemetry_forms import (
    WHOLE_REQUEST,
    Candidate,
    ItemError,
    ParsedTelemetry,
    parse_telemetry,
)
from domain.obis import BY_ALIAS
from domain.reading_rules import check_value
from domain.readings import Quality

TS = "2024-06-01T12:00:00+00:00"
TS_UTC = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def parse(body: Any, max_readings: int = 100) -> ParsedTelemetry:
    """Parse ``body`` (JSON-encoded first unless it is bytes)."""
    data = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return parse_telemetry(data, max_readings=max_readings)


def gateway(**fields: Any) -> dict[str, Any]:
    """A gateway item of meter SN-1 at ``TS`` with ``fields``."""
    return {"meter_id": "SN-1", "timestamp": TS} | fields


def obis(*readings: dict[str, Any], meter: str = "SN-2") -> dict[str, Any]:
    """An OBIS-form item."""
    return {"meter": meter, "readings": list(readings)}


def values(parsed: ParsedTelemetry) -> dict[str, tuple[str, float]]:
    """Candidate field → (quantity alias, value)."""
    aliases = {q.id: q.alias for q in BY_ALIAS.values()}
    return {c.field: (aliases[c.quantity], c.value) for c in parsed.candidates}


def errors(parsed: ParsedTelemetry) -> list[tuple[int, str, str]]:
    """(item, field, rule) of every error."""
    return [(e.item, e.field, e.rule) for e in parsed.errors]


def only_error(parsed: ParsedTelemetry) -> ItemError:
    """The single error of a request."""
    assert len(parsed.errors) == 1, parsed.errors
    return parsed.errors[0]


# -- gateway form --------------------------------------------------------------------------


def test_gateway_item_yields_one_reading_per_field_in_catalogue_units() -> None:
    parsed = parse(
        [
            gateway(
                voltage=231.5,
                current=12,
                power_kw=2.5,
                energy_kwh=1234.5,
                power_factor=0.95,
                frequency=50.01,
                region="somewhere-else",
            )
        ]
    )

    assert parsed.errors == []
    assert values(parsed) == {
        "voltage": ("voltage_l1", 231.5),
        "current": ("current_l1", 12.0),
        "power_kw": ("power_import", 2500.0),
        "energy_kwh": ("energy_import", 1234500.0),
        "power_factor": ("power_factor", 0.95),
        "frequency": ("frequency", 50.01),
    }
    first = parsed.candidates[0]
    assert (first.item, first.serial, first.ts, first.quality) == (0, "SN-1", TS_UTC, 0)
    assert (first.ts_field, first.serial_field, first.label) == ("timestamp", "meter_id", "voltage")
    assert msgspec.json.decode(first.raw)["voltage"] == 231.5


def test_missing_and_null_fields_yield_nothing_and_unknown_keys_are_ignored() -> None:
    parsed = parse([gateway(voltage=230, current=None, rssi=-71)])
    assert parsed.errors == []
    assert list(values(parsed)) == ["voltage"]


def test_gateway_wrapper_and_single_object_are_accepted() -> None:
    wrapped = parse({"readings": [gateway(voltage=230), gateway(meter_id="SN-9", voltage=231)]})
    single = parse(gateway(voltage=230))
    assert [(c.item, c.serial) for c in wrapped.candidates] == [(0, "SN-1"), (1, "SN-9")]
    assert [(c.item, c.serial) for c in single.candidates] == [(0, "SN-1")]


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2024-06-01T14:00:00+02:00", TS_UTC),
        ("2024-06-01T12:00:00Z", TS_UTC),
        ("2024-06-01T12:00:00.250Z", TS_UTC.replace(microsecond=250_000)),
        (1717243200, TS_UTC),
        (1717243200.5, TS_UTC.replace(microsecond=500_000)),
    ],
)
def test_timestamps_iso_with_offset_or_epoch_seconds_become_utc(
    timestamp: str | float, expected: datetime
) -> None:
    parsed = parse([gateway(timestamp=timestamp, voltage=230)])
    assert parsed.errors == []
    assert parsed.candidates[0].ts == expected
    assert parsed.candidates[0].ts.utcoffset() == UTC.utcoffset(None)


@pytest.mark.parametrize(
    ("timestamp", "rule"),
    [
        ("2024-06-01T12:00:00", "timezone"),
        ("2024-06-01", "timezone"),
        ("yesterday", "format"),
        (10**30, "format"),
        (True, "type"),
        (None, "type"),
    ],
)
def test_bad_timestamps_reject_the_item(timestamp: Any, rule: str) -> None:
    parsed = parse([gateway(timestamp=timestamp, voltage=230)])
    assert parsed.candidates == []
    error = only_error(parsed)
    assert (error.item, error.field, error.rule, error.serial) == (0, "timestamp", rule, "SN-1")


def test_wrong_type_rejects_that_item_only_and_names_the_field() -> None:
    parsed = parse([gateway(voltage="abc"), gateway(meter_id="SN-9", voltage=230)])
    error = only_error(parsed)
    assert error == ItemError(
        0, "voltage", "type", "voltage must be a number, got a string", "SN-1"
    )
    assert [c.serial for c in parsed.candidates] == ["SN-9"]
    assert parsed.error_raws[0] == msgspec.Raw(msgspec.json.encode(gateway(voltage="abc")))


@pytest.mark.parametrize(
    ("item", "field", "rule"),
    [
        ({"meter_id": "SN-1", "voltage": 230}, "timestamp", "required"),
        (gateway(meter_id=42, voltage=230), "meter_id", "type"),
        (gateway(meter_id="  ", voltage=230), "meter_id", "required"),
        (gateway(), "item", "empty"),
        (gateway(voltage=None), "item", "empty"),
        (gateway(region=7, voltage=230), "region", "type"),
        ([1, 2], "item", "type"),
        ("text", "item", "type"),
        ({"serial": "SN-1", "voltage": 230}, "item", "shape"),
        ({"meter": "SN-1"}, "item", "shape"),
    ],
)
def test_item_errors(item: Any, field: str, rule: str) -> None:
    parsed = parse([item, gateway(voltage=230)])
    error = only_error(parsed)
    assert (error.item, error.field, error.rule) == (0, field, rule)
    assert [c.item for c in parsed.candidates] == [1]


def test_too_large_number_breaks_finite() -> None:
    body = b'[{"meter_id": "SN-1", "timestamp": 1717243200, "voltage": 1e400, "current": 5}]'
    parsed = parse(body)
    assert errors(parsed) == []  # judged reading by reading, with the item's other fields
    assert values(parsed) == {"voltage": ("voltage_l1", math.inf), "current": ("current_l1", 5.0)}
    voltage = BY_ALIAS["voltage_l1"]
    violation = check_value(voltage, parsed.candidates[0].value, "voltage")
    assert violation is not None and violation.rule == "not-finite"


def test_too_large_obis_value_is_that_reading_only() -> None:
    body = (
        b'[{"meter": "SN-2", "readings": [{"obis": "current_l1", "ts": 0, "value": -1e999},'
        b' {"obis": "current_l1", "ts": 1, "value": 2}]}]'
    )
    parsed = parse(body)
    assert errors(parsed) == []
    assert [c.value for c in parsed.candidates] == [-math.inf, 2.0]


def test_too_large_timestamp_still_breaks_the_item() -> None:
    body = b'[{"meter_id": "SN-1", "timestamp": 1e400, "voltage": 230}]'
    assert errors(parse(body)) == [(0, "timestamp", "not-finite")]


@pytest.mark.parametrize("serial", ["SN\u00001", "SN 1", "-SN1", "S" * 65])
def test_meter_ids_must_be_serial_numbers(serial: str) -> None:
    body = json.dumps([{"meter_id": serial, "timestamp": 0, "voltage": 230}]).encode()
    assert errors(parse(body)) == [(0, "meter_id", "format")]


def test_a_body_nested_too_deeply_is_one_request_error() -> None:
    for body in (b"[" * 100_000, b'[{"meter_id": "SN-1", "x": ' + b"[" * 100_000 + b"]}"):
        parsed = parse(body)
        assert errors(parsed)[0][2] in ("nesting", "json"), errors(parsed)
    deep = b"[" * 100_000 + b"]" * 100_000
    assert errors(parse(deep)) == [(WHOLE_REQUEST, "body", "nesting")]


# -- OBIS form -------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["1.0.32.7.0.255", "1-0:32.7.0*255", "1-0:32.7.0", "voltage_l1"])
def test_obis_code_forms_and_aliases(code: str) -> None:
    parsed = parse(obis({"obis": code, "ts": TS, "value": 230.1}))
    assert parsed.errors == []
    assert values(parsed) == {"readings[0].value": ("voltage_l1", 230.1)}
    candidate = parsed.candidates[0]
    assert (candidate.serial, candidate.serial_field, candidate.ts_field) == (
        "SN-2",
        "meter",
        "readings[0].ts",
    )
    assert candidate.label == "voltage_l1"


@pytest.mark.parametrize(
    ("alias", "unit", "value", "expected"),
    [
        ("energy_import", "Wh", 5.0, 5.0),
        ("energy_import", "kWh", 1.5, 1500.0),
        ("energy_import", "MWh", 2.0, 2e6),
        ("power_import", "kW", 3.0, 3000.0),
        ("reactive_power_import", "kvar", 4.0, 4000.0),
        ("reactive_energy_import", "kvarh", 0.5, 500.0),
    ],
)
def test_units_are_converted_to_the_catalogue_unit(
    alias: str, unit: str, value: float, expected: float
) -> None:
    parsed = parse(obis({"obis": alias, "ts": TS, "value": value, "unit": unit}))
    assert parsed.errors == []
    assert parsed.candidates[0].value == expected


@pytest.mark.parametrize(("alias", "unit"), [("voltage_l1", "kV"), ("energy_import", "kwh")])
def test_unit_that_does_not_fit_is_an_error(alias: str, unit: str) -> None:
    parsed = parse(obis({"obis": alias, "ts": TS, "value": 1, "unit": unit}))
    assert errors(parsed) == [(0, "readings[0].unit", "unit")]


def test_quality_flags_and_timestamp_key() -> None:
    parsed = parse(
        obis(
            {"obis": "voltage_l1", "timestamp": 1717243200, "value": 1, "quality": ["estimated"]},
            {"obis": "current_l1", "ts": TS, "value": 1, "quality": ["Estimated", "suspect"]},
        )
    )
    assert parsed.errors == []
    assert [(c.quality, c.ts_field) for c in parsed.candidates] == [
        (Quality.ESTIMATED, "readings[0].timestamp"),
        (Quality.ESTIMATED | Quality.SUSPECT, "readings[1].ts"),
    ]


def test_ts_and_timestamp_must_agree_when_both_given() -> None:
    same = parse(obis({"obis": "voltage_l1", "ts": TS, "timestamp": 1717243200, "value": 1}))
    differ = parse(obis({"obis": "voltage_l1", "ts": TS, "timestamp": 1, "value": 1}))
    assert same.errors == []
    assert errors(differ) == [(0, "readings[0].timestamp", "conflict")]


V1 = {"obis": "voltage_l1", "ts": TS, "value": 1}


@pytest.mark.parametrize(
    ("reading", "field", "rule"),
    [
        (V1 | {"obis": "9.9.9.9.9.9"}, "readings[1].obis", "unknown-quantity"),
        ({"ts": TS, "value": 1}, "readings[1].obis", "required"),
        ({"obis": "voltage_l1", "value": 1}, "readings[1].ts", "required"),
        ({"obis": "voltage_l1", "ts": TS}, "readings[1].value", "required"),
        (V1 | {"value": "1"}, "readings[1].value", "type"),
        (V1 | {"ts": "2024-06-01 12:00"}, "readings[1].ts", "timezone"),
        (V1 | {"quality": ["odd"]}, "readings[1].quality", "unknown-quality"),
        (V1 | {"quality": "estimated"}, "readings[1].quality", "type"),
        (17, "readings[1]", "type"),
    ],
)
def test_a_bad_obis_reading_rejects_only_itself(reading: Any, field: str, rule: str) -> None:
    good = {"obis": "voltage_l1", "ts": TS, "value": 230}
    parsed = parse(obis(good, reading, good | {"ts": 1717243260}))
    error = only_error(parsed)
    assert (error.item, error.field, error.rule, error.serial) == (0, field, rule, "SN-2")
    assert [c.field for c in parsed.candidates] == ["readings[0].value", "readings[2].value"]
    assert parsed.error_raws[0] == msgspec.Raw(msgspec.json.encode(reading))


@pytest.mark.parametrize(
    ("item", "field", "rule"),
    [
        ({"meter": 5, "readings": []}, "meter", "type"),
        ({"meter": "", "readings": []}, "meter", "required"),
        ({"meter": "SN-2", "readings": {"obis": "voltage_l1"}}, "readings", "type"),
    ],
)
def test_bad_obis_item_header_rejects_the_item(item: Any, field: str, rule: str) -> None:
    assert errors(parse([item])) == [(0, field, rule)]


def test_mixed_forms_in_one_array_are_decided_per_item() -> None:
    parsed = parse(
        [
            obis({"obis": "frequency", "ts": TS, "value": 50}),
            gateway(frequency=49.9),
        ]
    )
    assert parsed.errors == []
    assert [(c.item, c.serial, c.field) for c in parsed.candidates] == [
        (0, "SN-2", "readings[0].value"),
        (1, "SN-1", "frequency"),
    ]
    assert len(parsed.items) == 2


# -- the request as a whole ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (b'[{"meter_id": "SN-1"', "json"),
        (b"", "json"),
        (b"\xff\xfe", "json"),
        (b"42", "shape"),
        (b'"readings"', "shape"),
        (b'{"data": []}', "shape"),
        (b'{"readings": {"meter_id": "SN-1"}}', "shape"),
    ],
)
def test_unusable_body_is_one_request_error(body: bytes, rule: str) -> None:
    parsed = parse(body)
    assert parsed.candidates == []
    assert errors(parsed) == [(WHOLE_REQUEST, "body", rule)]
    assert isinstance(msgspec.json.decode(parsed.error_raws[0]), str)


def test_empty_array_is_empty_not_an_error() -> None:
    assert parse([]) == ParsedTelemetry(candidates=[], errors=[], error_raws=[], items=[])


def test_more_readings_than_allowed_is_one_error_and_no_candidates() -> None:
    items = [gateway(voltage=230, current=1)] * 3
    assert len(parse(items, max_readings=6).candidates) == 6

    parsed = parse(items, max_readings=5)
    assert parsed.candidates == []
    assert errors(parsed) == [(WHOLE_REQUEST, "body", "too-many")]
    assert "5 readings" in parsed.errors[0].message


def test_obis_readings_count_towards_the_limit_even_when_malformed() -> None:
    parsed = parse(obis(*[{"obis": "voltage_l1"}] * 4), max_readings=3)
    assert errors(parsed) == [(WHOLE_REQUEST, "body", "too-many")]


def test_candidates_are_plain_structs() -> None:
    parsed = parse([gateway(voltage=230)])
    assert isinstance(parsed.candidates[0], Candidate)
    assert parsed.candidates[0].quantity == BY_ALIAS["voltage_l1"].id
