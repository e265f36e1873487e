"""The simulated meter's model, objects and persisted state, driven by a fake clock."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.dlms import axdr
from adapters.dlms.axdr import Data, Tag
from adapters.dlms.cosem_time import decode_datetime, encode_datetime
from adapters.dlms.simulator import obis as O
from adapters.dlms.simulator import simulated_keys
from adapters.dlms.simulator.apdu import DataAccessResult, Reference, Selection
from adapters.dlms.simulator.cosem_objects import AssociationInfo, Role
from adapters.dlms.simulator.meter import SimulatedMeter
from adapters.dlms.simulator.meter_model import DAY_S, SLOT_S
from adapters.dlms.simulator.profiles import CaptureObject
from adapters.dlms.simulator.state import MeterState

START = datetime(2025, 3, 1, tzinfo=UTC).timestamp()
NOW = START + 10 * DAY_S + 13 * 3600 + 7 * 60


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _meter(
    index: int = 3, state_dir: Path | None = None, t: float = NOW
) -> tuple[SimulatedMeter, Clock]:
    clock = Clock(t)
    return SimulatedMeter(index, history_start=START, state_dir=state_dir, clock=clock), clock


def test_keys_follow_the_contract_formula() -> None:
    keys = simulated_keys("SIM0000012", "my-seed")

    def secret(kind: str) -> bytes:
        return hmac.new(b"my-seed", f"SIM0000012:{kind}".encode(), hashlib.sha256).digest()

    assert keys.lls_password == secret("lls").hex()[:16].encode()
    assert (keys.ek, keys.ak) == (secret("ek")[:16], secret("ak")[:16])
    assert keys.system_title == b"HES\x00\x00\x00\x00\x0c"
    assert keys.csv_row().startswith("SIM0000012," + secret("lls").hex()[:16] + ",")
    with pytest.raises(ValueError, match="not a simulated meter serial"):
        simulated_keys("ABC0000001")


def test_registers_only_grow_and_follow_the_load() -> None:
    meter, _ = _meter()
    previous = meter.model.registers(START)
    assert previous == meter.model.traits.start_wh
    for step in range(1, 24 * 60 // 7 * 3):
        current = meter.model.registers(START + 8 * DAY_S + step * 7 * 60)
        assert all(c >= p for c, p in zip(current, previous, strict=True))
        previous = current
    day = meter.model.registers(START + 5 * DAY_S)[0] - meter.model.registers(START + 4 * DAY_S)[0]
    base_kwh = meter.model.traits.base_w * 24 / 1000
    assert 0.1 * base_kwh * 1000 < day < 3 * base_kwh * 1000


def test_open_relay_stops_energy_and_current() -> None:
    meter, clock = _meter()
    before = meter.model.registers(clock.t)
    meter.set_relay(connected=False)
    assert not meter.relay_connected
    clock.t += 3 * 3600
    assert meter.model.registers(clock.t) == before
    instant = meter.model.instant(clock.t)
    assert instant.current == (0.0, 0.0, 0.0) and min(instant.voltage) > 200
    meter.set_relay(connected=True)
    clock.t += 3 * 3600
    after = meter.model.registers(clock.t)
    assert after[0] + after[1] > before[0] + before[1]
    assert [code for _, code in meter.state.disconnector_log()] == [62, 63]


def test_load_profile_rows_are_the_registers_at_each_quarter_hour() -> None:
    meter, clock = _meter()
    buffer = meter.objects.buffer(O.LOAD_PROFILE)
    assert len(buffer.times) == 960
    assert buffer.times[-1] == int(clock.t // SLOT_S) * SLOT_S
    rows = buffer.render(950, 960)
    for t, row in zip(buffer.times[950:960], rows, strict=True):
        assert decode_datetime(row[0].octets()).timestamp() == t
        registers = meter.model.registers(t)
        assert row[1].value == int(registers[0]) and row[2].value == int(registers[1])


def test_events_are_deterministic_and_paired() -> None:
    a, _ = _meter(index=7)
    b, _ = _meter(index=7)
    events = a.model.events(START, NOW)
    assert events == b.model.events(START, NOW)
    assert events == sorted(events)
    codes = [c for _, c in events]
    assert codes.count(1) == codes.count(2) > 0  # every outage has power down and power up
    outage = next(t for t, c in events if c == 1)
    assert a.model.instant(outage + 1).voltage == (0.0, 0.0, 0.0)
    assert a.model.registers(outage + 30)[:2] == a.model.registers(outage)[:2]


def _get(meter: SimulatedMeter, ref: Reference, role: Role = Role.PUBLIC) -> object:
    return meter.objects.get(ref, role, AssociationInfo(16, role))


def _stamp(t: float) -> Data:
    return axdr.octets(encode_datetime(datetime.fromtimestamp(t, UTC)))


def _range(start: float, end: float, columns: list[CaptureObject] | None = None) -> Selection:
    clock = CaptureObject(8, O.CLOCK, 2).to_data()
    stamp = _stamp
    cols = axdr.array([c.to_data() for c in columns or []])
    return Selection(1, axdr.structure([clock, stamp(start), stamp(end), cols]))


def test_profile_selective_access() -> None:
    meter, clock = _meter()
    last = int(clock.t // SLOT_S) * SLOT_S
    ref = Reference(7, O.LOAD_PROFILE, 2, _range(last - 3600, last))
    rows = _get(meter, ref)
    assert isinstance(rows, Data) and len(rows.items()) == 5
    energy = CaptureObject(3, O.ACTIVE_EXPORT, 2)
    only = _get(meter, Reference(7, O.LOAD_PROFILE, 2, _range(last - 900, last, [energy])))
    assert isinstance(only, Data) and [len(r.items()) for r in only.items()] == [1, 1]
    entries = axdr.structure([axdr.u32(959), axdr.u32(0), axdr.u16(2), axdr.u16(3)])
    tail = _get(meter, Reference(7, O.LOAD_PROFILE, 2, Selection(2, entries)))
    assert isinstance(tail, Data) and [len(r.items()) for r in tail.items()] == [2, 2]
    wrong_column = CaptureObject(3, O.REACTIVE_IMPORT, 2)
    assert _get(meter, Reference(7, O.LOAD_PROFILE, 2, _range(0, last, [wrong_column]))) is (
        DataAccessResult.OBJECT_UNAVAILABLE
    )
    bad = Selection(1, axdr.structure([axdr.u8(1)] * 4))
    assert _get(meter, Reference(7, O.LOAD_PROFILE, 2, bad)) is DataAccessResult.TYPE_UNMATCHED
    assert _get(meter, Reference(7, O.LOAD_PROFILE, 2, Selection(9, axdr.NULL))) is (
        DataAccessResult.OTHER_REASON
    )


def test_access_rights_and_errors() -> None:
    meter, clock = _meter()
    assert _get(meter, Reference(7, O.EVENT_LOG, 2)) is DataAccessResult.READ_WRITE_DENIED
    assert isinstance(_get(meter, Reference(7, O.EVENT_LOG, 2), Role.READER), Data)
    assert _get(meter, Reference(3, O.ln("1.0.99.99.0.255"), 2)) is (
        DataAccessResult.OBJECT_UNDEFINED
    )
    assert _get(meter, Reference(1, O.CLOCK, 2)) is DataAccessResult.OBJECT_CLASS_INCONSISTENT
    assert _get(meter, Reference(3, O.ACTIVE_IMPORT, 9)) is DataAccessResult.OBJECT_UNDEFINED
    scaler_unit = _get(meter, Reference(3, O.VOLTAGE[0], 3))
    assert scaler_unit == axdr.structure([axdr.i8(-1), axdr.enum_(35)])
    new_time = axdr.octets(encode_datetime(datetime.fromtimestamp(clock.t + 600, UTC)))
    clock_time = Reference(8, O.CLOCK, 2)
    assert (
        meter.objects.set(clock_time, new_time, Role.PUBLIC) is DataAccessResult.READ_WRITE_DENIED
    )
    assert meter.objects.set(clock_time, new_time, Role.READER) is DataAccessResult.SUCCESS
    assert meter.meter_now() == pytest.approx(clock.t + 600)
    assert meter.objects.set(clock_time, axdr.u8(1), Role.READER) is DataAccessResult.TYPE_UNMATCHED
    disconnect = Reference(70, O.DISCONNECT_CONTROL, 1)
    assert meter.objects.action(disconnect, axdr.i8(0), Role.READER)[0] is (
        DataAccessResult.READ_WRITE_DENIED
    )
    assert meter.objects.action(disconnect, axdr.i8(0), Role.MANAGER)[0] is DataAccessResult.SUCCESS
    assert _get(meter, Reference(70, O.DISCONNECT_CONTROL, 2), Role.READER) == axdr.boolean(False)
    log = _get(meter, Reference(7, O.DISCONNECTOR_LOG, 2), Role.READER)
    assert isinstance(log, Data) and log.items()[-1].items()[1] == axdr.u8(62)
    shift = Reference(8, O.CLOCK, 6)  # shift_time is the Blue Book's clock method 6
    assert meter.objects.action(shift, Data(Tag.LONG, -900), Role.READER)[0] is (
        DataAccessResult.SUCCESS
    )
    assert meter.meter_now() == pytest.approx(clock.t - 300)
    assert meter.objects.action(shift, Data(Tag.LONG, 5000), Role.READER)[0] is (
        DataAccessResult.OTHER_REASON
    )


def test_object_list_reflects_the_role() -> None:
    meter, _ = _meter()
    public = _get(meter, Reference(15, O.ASSOCIATION, 2))
    manager = meter.objects.get(
        Reference(15, O.ASSOCIATION, 2), Role.MANAGER, AssociationInfo(1, Role.MANAGER)
    )
    assert isinstance(public, Data) and isinstance(manager, Data)

    def methods(objects: Data, ln: bytes) -> list[int]:
        entry = next(e for e in objects.items() if e.items()[2].value == ln)
        return [m.items()[1].integer() for m in entry.items()[3].items()[1].items()]

    assert methods(public, O.DISCONNECT_CONTROL) == [0, 0]
    assert methods(manager, O.DISCONNECT_CONTROL) == [1, 1]


def test_push_body_is_the_contract_structure() -> None:
    meter, _ = _meter()
    body = meter.objects.push_body()
    tags = [item.tag for item in body.items()]
    assert tags == [
        Tag.OCTET_STRING,
        Tag.OCTET_STRING,
        Tag.DOUBLE_LONG_UNSIGNED,
        Tag.DOUBLE_LONG_UNSIGNED,
        Tag.LONG_UNSIGNED,
        Tag.LONG_UNSIGNED,
    ]
    assert body.items()[0].value == b"HESSIM0000003"


def test_invocation_counters_survive_restarts(tmp_path: Path) -> None:
    path = tmp_path / "SIM0000001.json"
    state = MeterState(path)
    used = [state.next_server_ic() for _ in range(1500)]
    assert used == sorted(set(used))
    assert state.accept_client_ic(10) and not state.accept_client_ic(10)
    assert not state.accept_client_ic(9) and state.accept_client_ic(11)
    again = MeterState(path)  # a restart, possibly after a crash: counters continue above
    assert again.next_server_ic() > used[-1]
    assert not again.accept_client_ic(11) and again.client_ic_last == 11
    path.write_text("{not json")
    with pytest.raises(Exception, match="unreadable meter state"):
        MeterState(path)


def test_relay_state_survives_restarts(tmp_path: Path) -> None:
    meter, _ = _meter(state_dir=tmp_path)
    meter.set_relay(connected=False)
    again, _ = _meter(state_dir=tmp_path)
    assert not again.relay_connected
    assert again.state.disconnector_log()[-1][1] == 62
