"""Wire forms of ``POST /telemetry/batch``: the gateways' common JSON and the OBIS-keyed form.

Two forms, decided per item:

* **Gateway form** — an array of objects (or ``{"readings": [...]}``, or one bare object), each
  ``{meter_id, timestamp, voltage?, current?, power_kw?, energy_kwh?, power_factor?,
  frequency?, region?}`` where ``meter_id`` is the meter's serial number. ``region`` is
  informational only: the registry's region wins, and a different value is ignored, not an
  error. A ``null`` quantity counts as absent; unknown keys are ignored.
* **OBIS form** — ``{"meter": serial, "readings": [{"obis", "ts" | "timestamp", "value",
  "unit"?, "quality"?}]}`` or a list of such objects.

Timestamps are ISO-8601 with an offset, or Unix epoch seconds. Parsing never raises: every
problem becomes an ``ItemError`` naming the item, the field and the rule it broke.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

import msgspec

from domain.obis import BY_ALIAS, Quantity, lookup
from domain.readings import Quality
from domain.text import SERIAL_RE, SERIAL_RULE

WHOLE_REQUEST = -1
"""``ItemError.item`` of an error about the request as a whole (it yields no readings)."""
BODY_EXCERPT_CHARS = 1024
"""How much of an unusable body is kept for the dead-letter record."""

GATEWAY_FIELDS: dict[str, tuple[Quantity, float]] = {
    "voltage": (BY_ALIAS["voltage_l1"], 1.0),
    "current": (BY_ALIAS["current_l1"], 1.0),
    "power_kw": (BY_ALIAS["power_import"], 1000.0),
    "energy_kwh": (BY_ALIAS["energy_import"], 1000.0),
    "power_factor": (BY_ALIAS["power_factor"], 1.0),
    "frequency": (BY_ALIAS["frequency"], 1.0),
}
"""Gateway field → quantity and the factor to its catalogue unit."""

UNIT_FACTORS: dict[tuple[str, str], float] = {
    ("kWh", "Wh"): 1e3,
    ("MWh", "Wh"): 1e6,
    ("kW", "W"): 1e3,
    ("MW", "W"): 1e6,
    ("kvar", "var"): 1e3,
    ("Mvar", "var"): 1e6,
    ("kvarh", "varh"): 1e3,
    ("Mvarh", "varh"): 1e6,
}
"""(given unit, catalogue unit) → factor. Case matters: ``mW`` is not ``MW``."""

QUALITY_NAMES: dict[str, Quality] = {
    "valid": Quality.VALID,
    "estimated": Quality.ESTIMATED,
    "suspect": Quality.SUSPECT,
    "missing": Quality.MISSING,
    "clock_adjusted": Quality.CLOCK_ADJUSTED,
    "clock-adjusted": Quality.CLOCK_ADJUSTED,
}

Timestamp = str | int | float


class GatewayItem(msgspec.Struct, frozen=True):
    """One object of the gateway form."""

    meter_id: str
    timestamp: Timestamp
    voltage: float | None = None
    current: float | None = None
    power_kw: float | None = None
    energy_kwh: float | None = None
    power_factor: float | None = None
    frequency: float | None = None
    region: str | None = None


class ObisItem(msgspec.Struct, frozen=True):
    """One meter's object of the OBIS form (readings decoded one by one)."""

    meter: str
    readings: list[msgspec.Raw]


class ObisReading(msgspec.Struct, frozen=True):
    """One reading of the OBIS form."""

    obis: str
    value: float
    ts: Timestamp | None = None
    timestamp: Timestamp | None = None
    unit: str | None = None
    quality: list[str] = []


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """A well-formed reading, converted to its catalogue unit, not yet validated."""

    item: int
    """Index of the item in the request."""
    serial: str
    quantity: int
    """``domain.obis.Quantity.id``."""
    ts: datetime
    """UTC."""
    value: float
    quality: int
    field: str
    """The request field the value came from: ``voltage``, ``readings[3].value``."""
    ts_field: str
    """The request field the timestamp came from: ``timestamp``, ``readings[3].ts``."""
    serial_field: str
    """The request field naming the meter: ``meter_id`` or ``meter``."""
    label: str
    """How messages name the value: the gateway field, or the quantity's alias."""
    raw: msgspec.Raw
    """The JSON object the value came from (gateway item or OBIS reading)."""


class ItemError(msgspec.Struct, frozen=True):
    """One broken rule: the item, the field, the rule and a readable message."""

    item: int
    field: str
    rule: str
    message: str
    serial: str | None = None


class ParsedTelemetry(msgspec.Struct, frozen=True):
    """Everything usable in a request and everything that is not."""

    candidates: list[Candidate]
    errors: list[ItemError]
    error_raws: list[msgspec.Raw]
    """The JSON each error is about, same order as ``errors`` (an excerpt for the body)."""
    items: list[msgspec.Raw]
    """The JSON of each item, by index (empty when the request failed as a whole)."""


class _ItemFailed(Exception):
    """An item (or one OBIS reading) is unusable; carries the field, rule and message."""

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule
        self.message = message


_Items = list[msgspec.Raw] | dict[str, msgspec.Raw]
_item_keys = msgspec.json.Decoder(dict[str, msgspec.Raw])
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_top = msgspec.json.Decoder(_Items)
_gateway = msgspec.json.Decoder(GatewayItem)
_obis_item = msgspec.json.Decoder(ObisItem)
_obis_reading = msgspec.json.Decoder(ObisReading)
_number = msgspec.json.Decoder(float | None)
_wide_number = msgspec.json.Decoder(Decimal)
_encoder = msgspec.json.Encoder()
S = TypeVar("S", bound=msgspec.Struct)
_MSGSPEC_AT = re.compile(r"^(?P<text>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`")
_TYPE_NAMES = {
    "float": "a number",
    "int": "a number",
    "str": "a string",
    "bool": "true/false",
    "array": "an array",
    "object": "an object",
}


def parse_telemetry(body: bytes, *, max_readings: int) -> ParsedTelemetry:
    """Decode a ``POST /telemetry/batch`` body of either form into candidates and errors.

    A body nested deeper than the JSON decoder goes (about 1,000 levels) fails as a whole
    with rule ``nesting``.
    """
    try:
        return _parse(body, max_readings)
    except RecursionError:
        return _request_error(body, "nesting", "the body is nested too deeply to be telemetry")


def _parse(body: bytes, max_readings: int) -> ParsedTelemetry:
    try:
        top = _top.decode(body)
    except msgspec.ValidationError:  # a subclass of DecodeError: must come first
        return _request_error(body, "shape", _SHAPE_MESSAGE)
    except msgspec.DecodeError as exc:
        return _request_error(body, "json", f"the body is not valid JSON: {exc}")

    items: list[msgspec.Raw]
    if isinstance(top, list):
        items = top
    elif "meter_id" in top or ("meter" in top and "readings" in top):
        items = [msgspec.Raw(body)]
    elif "readings" in top:
        try:
            items = _raw_list.decode(top["readings"])
        except msgspec.ValidationError:
            return _request_error(body, "shape", _SHAPE_MESSAGE)
    else:
        return _request_error(body, "shape", _SHAPE_MESSAGE)

    parser = _Parser()
    count = 0
    for index, raw in enumerate(items):
        count += parser.item(index, raw, max_readings - count)
        if count > max_readings:
            return _request_error(
                body,
                "too-many",
                f"the request holds more than {max_readings} readings; split it",
            )
    return ParsedTelemetry(
        candidates=parser.candidates,
        errors=parser.errors,
        error_raws=parser.error_raws,
        items=items,
    )


_SHAPE_MESSAGE = (
    "expected an array of readings, {'readings': [...]}, or {'meter': ..., 'readings': [...]}"
)


def _request_error(body: bytes, rule: str, message: str) -> ParsedTelemetry:
    excerpt = body[: BODY_EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    raw = msgspec.Raw(msgspec.json.encode(excerpt[:BODY_EXCERPT_CHARS]))
    return ParsedTelemetry(
        candidates=[],
        errors=[ItemError(WHOLE_REQUEST, "body", rule, message)],
        error_raws=[raw],
        items=[],
    )


class _Parser:
    """Accumulates candidates and errors item by item."""

    def __init__(self) -> None:
        self.candidates: list[Candidate] = []
        self.errors: list[ItemError] = []
        self.error_raws: list[msgspec.Raw] = []

    def fail(self, index: int, raw: msgspec.Raw, exc: _ItemFailed, serial: str | None) -> None:
        """Record one unusable item or reading."""
        self.errors.append(ItemError(index, exc.field, exc.rule, exc.message, serial))
        self.error_raws.append(raw)

    def item(self, index: int, raw: msgspec.Raw, budget: int) -> int:
        """Parse one item; return how many readings it holds (usable or not).

        An OBIS item holding more than ``budget`` readings is only counted, not parsed.
        """
        try:
            keys = _item_keys.decode(raw)
        except msgspec.ValidationError:
            self.fail(index, raw, _ItemFailed("item", "type", "an item must be an object"), None)
            return 1
        if "meter_id" in keys:
            return self.gateway(index, raw, keys)
        if "meter" in keys and "readings" in keys:
            return self.obis(index, raw, budget)
        self.fail(
            index,
            raw,
            _ItemFailed(
                "item",
                "shape",
                "an item needs meter_id (gateway form) or meter and readings (OBIS form)",
            ),
            None,
        )
        return 1

    def gateway(self, index: int, raw: msgspec.Raw, keys: dict[str, msgspec.Raw]) -> int:
        """Parse one gateway item into up to six candidates."""
        count = sum(1 for name in GATEWAY_FIELDS if name in keys)
        try:
            item = _decode_wide(_gateway, raw, GATEWAY_FIELDS)
            serial = _serial(item.meter_id, "meter_id")
            ts = _timestamp(item.timestamp, "timestamp")
        except msgspec.ValidationError as exc:
            self.fail(index, raw, _translate(exc, ""), _serial_hint(keys.get("meter_id")))
            return max(count, 1)
        except _ItemFailed as exc:
            self.fail(index, raw, exc, _serial_hint(keys.get("meter_id")))
            return max(count, 1)

        found = 0
        for name, (quantity, factor) in GATEWAY_FIELDS.items():
            value: float | None = getattr(item, name)
            if value is None:
                continue
            found += 1
            self.candidates.append(
                Candidate(
                    item=index,
                    serial=serial,
                    quantity=quantity.id,
                    ts=ts,
                    value=value * factor,
                    quality=Quality.VALID,
                    field=name,
                    ts_field="timestamp",
                    serial_field="meter_id",
                    label=name,
                    raw=raw,
                )
            )
        if not found:
            self.fail(
                index,
                raw,
                _ItemFailed("item", "empty", "the item has none of: " + ", ".join(GATEWAY_FIELDS)),
                serial,
            )
            return 1
        return found

    def obis(self, index: int, raw: msgspec.Raw, budget: int) -> int:
        """Parse one OBIS item, each reading on its own, unless it exceeds ``budget``."""
        try:
            item = _obis_item.decode(raw)
            serial = _serial(item.meter, "meter")
        except msgspec.ValidationError as exc:
            self.fail(index, raw, _translate(exc, ""), None)
            return 1
        except _ItemFailed as exc:
            self.fail(index, raw, exc, None)
            return 1
        if len(item.readings) > budget:
            return len(item.readings)
        for position, reading_raw in enumerate(item.readings):
            prefix = f"readings[{position}]"
            try:
                self.candidates.append(_obis_candidate(index, serial, prefix, reading_raw))
            except msgspec.ValidationError as exc:
                self.fail(index, reading_raw, _translate(exc, prefix), serial)
            except _ItemFailed as exc:
                self.fail(index, reading_raw, exc, serial)
        return len(item.readings)


def _decode_wide(decoder: msgspec.json.Decoder[S], raw: msgspec.Raw, numbers: Iterable[str]) -> S:
    """``raw`` decoded; a number beyond float range in one of ``numbers`` becomes ±inf.

    Such a value is then one reading rejected by its rule (``not-finite``), not the whole item.
    """
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        if not str(exc).startswith("Number out of range"):
            raise
        failure = exc
    fields = _item_keys.decode(raw)
    huge: dict[str, float] = {}
    for name in numbers:
        if name not in fields:
            continue
        try:
            _number.decode(fields[name])
        except msgspec.ValidationError:
            try:
                huge[name] = float(_wide_number.decode(fields[name]))
            except msgspec.ValidationError:
                raise failure from None
            fields[name] = msgspec.Raw(b"0")
    return msgspec.structs.replace(decoder.decode(_encoder.encode(fields)), **huge)


def _obis_candidate(index: int, serial: str, prefix: str, raw: msgspec.Raw) -> Candidate:
    reading = _decode_wide(_obis_reading, raw, ("value",))
    quantity = lookup(reading.obis)
    if quantity is None:
        raise _ItemFailed(
            f"{prefix}.obis",
            "unknown-quantity",
            f"{reading.obis!r} is neither a known OBIS code nor a quantity alias",
        )
    if reading.ts is not None:
        ts_field = f"{prefix}.ts"
        ts = _timestamp(reading.ts, ts_field)
        if (
            reading.timestamp is not None
            and _timestamp(reading.timestamp, f"{prefix}.timestamp") != ts
        ):
            raise _ItemFailed(
                f"{prefix}.timestamp", "conflict", "ts and timestamp are both given and differ"
            )
    elif reading.timestamp is not None:
        ts_field = f"{prefix}.timestamp"
        ts = _timestamp(reading.timestamp, ts_field)
    else:
        raise _ItemFailed(f"{prefix}.ts", "required", "ts (or timestamp) is required")
    factor = _unit_factor(reading.unit, quantity, f"{prefix}.unit")
    quality = Quality.VALID
    for name in reading.quality:
        flag = QUALITY_NAMES.get(name.lower())
        if flag is None:
            raise _ItemFailed(
                f"{prefix}.quality",
                "unknown-quality",
                f"{name!r} is not a quality flag; known: " + ", ".join(QUALITY_NAMES),
            )
        quality |= flag
    return Candidate(
        item=index,
        serial=serial,
        quantity=quantity.id,
        ts=ts,
        value=reading.value * factor,
        quality=quality,
        field=f"{prefix}.value",
        ts_field=ts_field,
        serial_field="meter",
        label=quantity.alias,
        raw=raw,
    )


def _unit_factor(unit: str | None, quantity: Quantity, field: str) -> float:
    if unit is None or unit == quantity.unit:
        return 1.0
    factor = UNIT_FACTORS.get((unit, quantity.unit))
    if factor is None:
        raise _ItemFailed(
            field,
            "unit",
            f"unit {unit!r} does not fit {quantity.alias}, measured in {quantity.unit!r}",
        )
    return factor


def _serial(text: str, field: str) -> str:
    serial = text.strip()
    if not serial:
        raise _ItemFailed(field, "required", f"{field} (the meter's serial number) is empty")
    if not SERIAL_RE.fullmatch(serial):
        raise _ItemFailed(field, "format", f"{field} is not a serial number: {SERIAL_RULE}")
    return serial


def _serial_hint(raw: msgspec.Raw | None) -> str | None:
    """The serial of an item that failed to decode, when it is at least a string."""
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw, type=str).strip() or None
    except msgspec.ValidationError:
        return None


def _timestamp(value: Timestamp, field: str) -> datetime:
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            raise _ItemFailed(field, "format", f"{value!r} is not an ISO-8601 timestamp") from None
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise _ItemFailed(field, "timezone", f"{value!r} has no UTC offset (add Z or +hh:mm)")
        return ts.astimezone(UTC)
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise _ItemFailed(field, "format", f"{value!r} is not a Unix time in seconds") from None


def _translate(exc: msgspec.ValidationError, prefix: str) -> _ItemFailed:
    """Field, rule and message from msgspec's "Expected `float`, got `str` - at `$.voltage`"."""
    match = _MSGSPEC_AT.match(str(exc))
    text = match["text"] if match else str(exc)
    path = (match["path"] if match else None) or ""
    path = path.removeprefix(".")
    field = ".".join(part for part in (prefix, path) if part)
    missing = _MISSING.match(text)
    if missing:
        field = ".".join(part for part in (field, missing["name"]) if part)
        return _ItemFailed(field, "required", f"{field} is required")
    field = field or "item"
    expected = _EXPECTED.match(text)
    if expected:
        want = [_TYPE_NAMES.get(t, t) for t in expected["want"].split(" | ") if t != "null"]
        wanted = " or ".join(dict.fromkeys(want))
        got = _TYPE_NAMES.get(expected["got"], expected["got"])
        return _ItemFailed(field, "type", f"{field} must be {wanted}, got {got}")
    if text.startswith("Number out of range"):
        return _ItemFailed(field, "not-finite", f"{field} is too large to be a finite number")
    return _ItemFailed(field, "type", f"{field}: {text}")
