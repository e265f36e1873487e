"""The ingest service with in-memory ports: lookup, validation, batching, dead letters, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands.ingest import (
    IngestResult,
    IngestService,
    MeterInfo,
    Rejection,
)
from commands.telemetry_forms import GATEWAY_FIELDS, WHOLE_REQUEST
from domain.errors import BackPressure
from domain.meter import meter_id
from domain.obis import BY_ALIAS
from domain.readings import MeterBatch, Quality, Source, partition_of
from domain.values import MeterStatus

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
TS = "2024-06-01T11:55:00Z"
PARTITIONS = 8
MAX_AGE = 7 * 86400.0
TOLERANCE = 300.0


def meter(serial: str, *, area: str = "north-1", **fields: Any) -> MeterInfo:
    """A commissioned meter of the registry."""
    values: dict[str, Any] = {
        "id": meter_id(serial),
        "serial": serial,
        "region": "north",
        "area": area,
        "status": MeterStatus.COMMISSIONED.value,
    } | fields
    return MeterInfo(**values)


class Directory:
    """In-memory ``MeterDirectory`` that records its calls."""

    def __init__(self, *meters: MeterInfo) -> None:
        self.meters = {m.id: m for m in meters}
        self.calls: list[set[UUID]] = []

    async def lookup(self, ids: Collection[UUID]) -> Mapping[UUID, MeterInfo]:
        """The known meters among ``ids``."""
        self.calls.append(set(ids))
        return {i: self.meters[i] for i in ids if i in self.meters}


class Sink:
    """In-memory ``ReadingSink``; raises ``fail`` when set."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.published: list[tuple[MeterBatch, int]] = []
        self.calls = 0

    async def publish(self, batches: Sequence[MeterBatch], partitions: Sequence[int]) -> None:
        """Keep the batches with their partitions."""
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        self.published.extend(zip(batches, partitions, strict=True))


class DeadLetters:
    """In-memory ``DeadLetterSink``; raises ``fail`` when set."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.rejections: list[Rejection] = []
        self.calls = 0

    async def reject(self, rejections: Sequence[Rejection]) -> None:
        """Keep the rejections."""
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        self.rejections.extend(rejections)


class Harness:
    """An ``IngestService`` wired to fakes, with a fixed clock."""

    def __init__(
        self,
        *meters: MeterInfo,
        sink: Sink | None = None,
        dead_letters: DeadLetters | None = None,
        **options: Any,
    ) -> None:
        self.directory = Directory(*meters)
        self.sink = sink or Sink()
        self.dead_letters = dead_letters or DeadLetters()
        kwargs: dict[str, Any] = {
            "partitions": PARTITIONS,
            "max_batch_readings": 1000,
            "future_tolerance_seconds": TOLERANCE,
            "max_age_seconds": MAX_AGE,
            "clock": lambda: NOW,
        } | options
        self.service = IngestService(self.directory, self.sink, self.dead_letters, **kwargs)

    async def ingest(self, body: Any, source: Source = Source.HTTP) -> IngestResult:
        """Ingest ``body`` (JSON-encoded unless bytes)."""
        data = body if isinstance(body, bytes) else msgspec.json.encode(body)
        return await self.service.ingest(data, source)

    def batches(self) -> list[MeterBatch]:
        """Published batches, in order."""
        return [b for b, _ in self.sink.published]

    def rules(self) -> list[tuple[int, str, str]]:
        """(item, field, rule) of every dead letter."""
        return [(r.item, r.field, r.rule) for r in self.dead_letters.rejections]


def gateway(serial: str = "SN-1", timestamp: Any = TS, **fields: Any) -> dict[str, Any]:
    """A gateway-form item."""
    return {"meter_id": serial, "timestamp": timestamp} | fields


def result_rules(result: IngestResult) -> list[tuple[int, str, str]]:
    """(item, field, rule) of every error in the answer."""
    return [(e.item, e.field, e.rule) for e in result.errors]


# -- accepted readings -----------------------------------------------------------------------


async def test_readings_of_one_meter_travel_as_one_batch() -> None:
    h = Harness(meter("SN-1"))
    result = await h.ingest(
        [
            gateway(voltage=230.5, energy_kwh=10, region="elsewhere"),
            gateway(timestamp="2024-06-01T11:50:00Z", voltage=229.0, energy_kwh=9.5),
        ],
        Source.NATS,
    )

    assert result == IngestResult(accepted=4, rejected=0, errors=[])
    [(batch, partition)] = h.sink.published
    assert batch.meter == meter_id("SN-1")
    assert batch.region == "north"
    assert batch.source == Source.NATS
    assert batch.received_at == NOW
    assert partition == partition_of("north-1", PARTITIONS)
    energy, voltage = BY_ALIAS["energy_import"].id, BY_ALIAS["voltage_l1"].id
    assert [(r.quantity, r.ts.minute, r.value) for r in batch.readings] == [
        (energy, 50, 9500.0),
        (voltage, 50, 229.0),
        (energy, 55, 10000.0),
        (voltage, 55, 230.5),
    ]
    assert h.dead_letters.calls == 0


async def test_one_directory_lookup_per_request_and_serials_are_case_insensitive() -> None:
    h = Harness(meter("SN-1"), meter("SN-2"))
    result = await h.ingest(
        [
            gateway("SN-1", voltage=230),
            gateway("sn-1", timestamp="2024-06-01T11:56:00Z", voltage=231),
            gateway("SN-2", voltage=232),
            {"meter": "SN-2", "readings": [{"obis": "frequency", "ts": TS, "value": 50}]},
        ]
    )
    assert result.accepted == 4
    assert h.directory.calls == [{meter_id("SN-1"), meter_id("SN-2")}]
    assert [(b.meter, len(b.readings)) for b in h.batches()] == [
        (meter_id("SN-1"), 2),
        (meter_id("SN-2"), 2),
    ]


async def test_partition_follows_the_area_and_is_stable() -> None:
    meters = [meter(f"SN-{n}", area=f"area-{n % 3}") for n in range(12)]
    h = Harness(*meters)
    body = [gateway(m.serial, voltage=230) for m in meters]
    await h.ingest(body)
    await h.ingest(body)

    by_meter = {b.meter: p for b, p in h.sink.published}
    for m in meters:
        assert by_meter[m.id] == partition_of(m.area, PARTITIONS)
    first, second = h.sink.published[:12], h.sink.published[12:]
    assert [p for _, p in first] == [p for _, p in second]
    assert len({p for _, p in first}) > 1


async def test_large_share_of_a_meter_is_split_into_stable_messages() -> None:
    h = Harness(meter("SN-1"), readings_per_message=2)
    items = [gateway(timestamp=f"2024-06-01T11:5{n}:00Z", voltage=230 + n) for n in range(5)]
    await h.ingest(items)
    await h.ingest(list(reversed(items)))

    sizes = [len(b.readings) for b in h.batches()]
    assert sizes == [2, 2, 1, 2, 2, 1]
    ids = [b.message_id() for b in h.batches()]
    assert ids[:3] == ids[3:]
    assert {p for _, p in h.sink.published} == {partition_of("north-1", PARTITIONS)}


async def test_suspect_voltage_is_published_with_its_flag() -> None:
    h = Harness(meter("SN-1"))
    await h.ingest(
        {
            "meter": "SN-1",
            "readings": [
                {"obis": "voltage_l1", "ts": TS, "value": 0, "quality": ["estimated"]},
                {"obis": "voltage_l2", "ts": TS, "value": 231},
            ],
        }
    )
    assert [r.quality for r in h.batches()[0].readings] == [
        Quality.ESTIMATED | Quality.SUSPECT,
        Quality.VALID,
    ]


async def test_registered_but_not_commissioned_meter_is_accepted() -> None:
    h = Harness(meter("SN-1", status=MeterStatus.REGISTERED.value))
    assert (await h.ingest([gateway(voltage=230)])).accepted == 1


# -- rejections ----------------------------------------------------------------------------


async def test_unknown_meter_is_rejected_once_per_item_and_dead_lettered() -> None:
    h = Harness(meter("SN-1"))
    obis_item = {
        "meter": "NOPE-2",
        "readings": [
            {"obis": "voltage_l1", "ts": TS, "value": 230},
            {"obis": "current_l1", "ts": TS, "value": 1},
        ],
    }
    result = await h.ingest(
        [gateway("NOPE-1", voltage=230, current=2), obis_item, gateway(voltage=230)]
    )

    assert result.accepted == 1
    assert result.rejected == 2
    assert result_rules(result) == [(0, "meter_id", "unknown-meter"), (1, "meter", "unknown-meter")]
    assert result.errors[0].serial == "NOPE-1"
    assert "NOPE-1" in result.errors[0].message
    assert h.rules() == result_rules(result)
    assert h.dead_letters.rejections[1].raw == obis_item


async def test_decommissioned_meter_is_rejected() -> None:
    h = Harness(meter("SN-1", status=MeterStatus.DECOMMISSIONED.value))
    result = await h.ingest([gateway(voltage=230, current=1)])
    assert result_rules(result) == [(0, "meter_id", "decommissioned")]
    assert h.sink.calls == 0


async def test_rule_breaks_name_their_field_and_the_rest_is_accepted() -> None:
    h = Harness(meter("SN-1"))
    result = await h.ingest([gateway(voltage=612.0, current=5, frequency=50, power_factor=1.5)])

    assert result.accepted == 2
    assert result_rules(result) == [(0, "voltage", "range"), (0, "power_factor", "range")]
    assert result.errors[0].message == "voltage 612.0 V is above the maximum 500 V"
    dead = h.dead_letters.rejections[0]
    assert (dead.source, dead.received_at, dead.serial) == (Source.HTTP, NOW, "SN-1")
    assert dead.raw == gateway(voltage=612.0, current=5, frequency=50, power_factor=1.5)


async def test_time_rules_name_the_timestamp_once_per_gateway_item() -> None:
    h = Harness(meter("SN-1"))
    future = (NOW + timedelta(hours=1)).timestamp()
    old = (NOW - timedelta(days=8)).isoformat()
    result = await h.ingest(
        [
            gateway(timestamp=future, voltage=230, current=1, frequency=50),
            gateway(timestamp=old, voltage=230),
        ]
    )
    assert result.accepted == 0
    assert result_rules(result) == [(0, "timestamp", "future"), (1, "timestamp", "too-old")]


async def test_same_meter_and_time_twice_is_a_duplicate() -> None:
    h = Harness(meter("SN-1"))
    result = await h.ingest([gateway(voltage=230, current=1), gateway("sn-1", voltage=231)])
    assert result.accepted == 2
    assert result_rules(result) == [(1, "timestamp", "duplicate")]


async def test_obis_time_rule_names_the_reading_timestamp() -> None:
    h = Harness(meter("SN-1"))
    result = await h.ingest(
        {
            "meter": "SN-1",
            "readings": [
                {"obis": "voltage_l1", "ts": TS, "value": 230},
                {"obis": "voltage_l1", "timestamp": "2030-01-01T00:00:00Z", "value": 230},
            ],
        }
    )
    assert result_rules(result) == [(0, "readings[1].timestamp", "future")]
    assert h.dead_letters.rejections[0].raw == {
        "obis": "voltage_l1",
        "timestamp": "2030-01-01T00:00:00Z",
        "value": 230,
    }


async def test_energy_below_the_last_known_register_is_decreasing() -> None:
    h = Harness(meter("SN-1", last_energy_wh=50_000.0, last_energy_ts=NOW - timedelta(hours=1)))
    result = await h.ingest(
        [
            gateway(energy_kwh=49.0),
            gateway(timestamp="2024-06-01T10:00:00Z", energy_kwh=10.0),
            gateway(timestamp="2024-06-01T10:30:00Z", energy_kwh=9.0),
        ]
    )
    assert result.accepted == 1
    assert result_rules(result) == [
        (0, "energy_kwh", "decreasing"),
        (2, "energy_kwh", "decreasing"),
    ]
    assert "50000.0 Wh" in result.errors[0].message


async def test_negative_energy_breaks_range() -> None:
    h = Harness(meter("SN-1"))
    result = await h.ingest([gateway(energy_kwh=-1)])
    assert result_rules(result) == [(0, "energy_kwh", "range")]


async def test_malformed_items_are_dead_lettered_with_the_rest_accepted() -> None:
    h = Harness(meter("SN-1"))
    result = await h.ingest([gateway(voltage="abc"), 7, gateway(voltage=230)])
    assert result.accepted == 1
    assert result_rules(result) == [(0, "voltage", "type"), (1, "item", "type")]
    assert [r.raw for r in h.dead_letters.rejections] == [gateway(voltage="abc"), 7]
    assert h.dead_letters.rejections[0].serial == "SN-1"


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (b"{not json", "json"),
        (b"42", "shape"),
        (msgspec.json.encode([gateway(voltage=1)] * 4), "too-many"),
    ],
)
async def test_unusable_request_is_one_error_nothing_published(body: bytes, rule: str) -> None:
    h = Harness(meter("SN-1"), max_batch_readings=3)
    result = await h.ingest(body)
    assert result_rules(result) == [(WHOLE_REQUEST, "body", rule)]
    assert (result.accepted, result.rejected) == (0, 1)
    assert h.directory.calls == []
    assert h.sink.calls == 0
    [dead] = h.dead_letters.rejections
    assert isinstance(dead.raw, str)
    assert dead.raw == body.decode()[:1024]


async def test_errors_are_ordered_by_item() -> None:
    h = Harness(meter("SN-1"))
    result = await h.ingest(
        [gateway("NOPE", voltage=1), gateway(voltage="x"), gateway(voltage=600)]
    )
    assert [e.item for e in result.errors] == [0, 1, 2]


async def test_rejections_encode_as_json() -> None:
    h = Harness(meter("SN-1"))
    await h.ingest([gateway(voltage=612)])
    decoded = msgspec.json.decode(
        msgspec.json.encode(h.dead_letters.rejections), type=list[Rejection]
    )
    assert decoded == h.dead_letters.rejections


# -- failures --------------------------------------------------------------------------------


async def test_back_pressure_propagates_and_nothing_is_dead_lettered() -> None:
    h = Harness(meter("SN-1"), sink=Sink(fail=BackPressure("READINGS is full")))
    with pytest.raises(BackPressure):
        await h.ingest([gateway(voltage=230), gateway("NOPE", voltage=230)])
    assert h.dead_letters.calls == 0


async def test_dead_letter_failure_fails_the_request() -> None:
    h = Harness(meter("SN-1"), dead_letters=DeadLetters(fail=ConnectionError("nats down")))
    with pytest.raises(ConnectionError):
        await h.ingest([gateway(voltage=230), gateway("NOPE", voltage=230)])
    assert len(h.sink.published) == 1


def test_service_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="partitions"):
        Harness(partitions=0)


# -- property ------------------------------------------------------------------------------

SERIALS = ("SN-1", "SN-2", "sn-3")
RANGES: dict[str, tuple[float, float]] = {
    "voltage": (0, 500),
    "current": (0, 2000),
    "power_kw": (0, 5000),
    "energy_kwh": (0, 1e9),
    "power_factor": (-1, 1),
    "frequency": (45, 65),
}
assert set(RANGES) == set(GATEWAY_FIELDS)


def _timestamp(offset: int, style: int) -> str | int | float:
    instant = NOW + timedelta(seconds=offset)
    if style == 0:
        return int(instant.timestamp())
    if style == 1:
        return instant.timestamp() + 0.0
    return instant.astimezone(UTC).isoformat()


@st.composite
def gateway_items(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Valid gateway items: known meters, in the time window, in range, registers rising."""
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(SERIALS), st.integers(-6 * 86400, int(TOLERANCE))),
            max_size=25,
            unique_by=lambda k: (k[0].upper(), k[1]),
        )
    )
    items: list[dict[str, Any]] = []
    for serial, offset in keys:
        names = draw(st.sets(st.sampled_from(sorted(RANGES)), min_size=1))
        fields = {
            name: draw(st.floats(*RANGES[name], allow_nan=False, allow_infinity=False))
            for name in names
        }
        items.append(
            gateway(serial, _timestamp(offset, draw(st.integers(0, 2))), **fields)
            | {"_offset": offset}
        )
    for serial in SERIALS:
        # Registers never decrease: hand out the drawn energies in time order.
        mine = sorted(
            (i for i in items if i["meter_id"] == serial and "energy_kwh" in i),
            key=lambda i: i["_offset"],
        )
        for item, energy in zip(mine, sorted(i["energy_kwh"] for i in mine), strict=True):
            item["energy_kwh"] = energy
    for item in items:
        del item["_offset"]
    return items


@settings(max_examples=60, deadline=None)
@given(gateway_items())
def test_every_field_of_valid_gateway_items_is_accepted(items: list[dict[str, Any]]) -> None:
    h = Harness(*(meter(s) for s in SERIALS))
    result = asyncio.run(h.ingest(items))
    present = sum(1 for item in items for name in GATEWAY_FIELDS if name in item)
    assert result.errors == []
    assert result.accepted == present
    assert sum(len(b.readings) for b in h.batches()) == present
