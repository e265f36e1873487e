"""Association views and read plans: parsing the object list as meters send it, access modes
of each association version, and what the head-end asks for (or not, and why)."""

from __future__ import annotations

import pytest

from adapters.dlms.cosem import DataAccessResult, ScalerUnit, Scaling, UnitMismatch, result_name
from adapters.dlms.simulator import behaviour
from adapters.dlms.simulator import obis as O
from adapters.dlms.simulator.apdu import Reference
from adapters.dlms.simulator.cosem_objects import AssociationInfo, Role
from adapters.dlms.simulator.meter import SimulatedMeter
from domain.association_view import (
    Access,
    AssociationView,
    CosemObject,
    ViewError,
    parse_object_list,
)
from domain.dlms_profile import ModelProfile
from domain.read_plan import Status, Step, plan_reads
from domain.readings import Quality

IDIS = ModelProfile(format=1, name="idis", version="1")
LN = bytes((0, 0, 1, 0, 0, 255))


def _decoded(meter: SimulatedMeter, role: Role) -> object:
    """The object list as a client decodes it (plain Python values)."""
    from adapters.dlms import axdr

    data = meter.objects.get(Reference(15, O.ASSOCIATION, 2), role, AssociationInfo(1, role))
    assert isinstance(data, axdr.Data)

    def plain(d: axdr.Data) -> object:
        if d.tag in (axdr.Tag.ARRAY, axdr.Tag.STRUCTURE):
            return [plain(i) for i in d.items()]
        return d.value

    return plain(data)


def test_the_object_list_parses_and_modes_follow_the_role() -> None:
    meter = SimulatedMeter(0, history_start=0.0)
    public = parse_object_list(_decoded(meter, Role.PUBLIC), version=1)
    manager = parse_object_list(_decoded(meter, Role.MANAGER), version=1)
    log = public.find("0.0.99.98.0.255")
    assert log is not None and log.class_id == 7
    assert not public.readable(log, 2) and public.readable(log, 1)
    disconnector = manager.find("0.0.96.3.10.255")
    assert disconnector is not None and manager.callable(disconnector, 1)
    clock = manager.find("0.0.1.0.0.255")
    assert clock is not None and manager.writable(clock, 2)


def test_access_modes_of_version_3_are_bit_flags_and_version_0_methods_booleans() -> None:
    obj = CosemObject(
        class_id=8,
        version=0,
        obis="0.0.1.0.0.255",
        attributes=(Access(2, 3), Access(3, 4)),
        methods=(Access(1, True),),
    )
    v1 = AssociationView(version=1, objects=(obj,))
    v3 = AssociationView(version=3, objects=(obj,))
    assert v1.readable(obj, 2) and v1.writable(obj, 2)
    assert v1.readable(obj, 3) and not v1.writable(obj, 3)  # 4: authenticated read-only
    assert v3.readable(obj, 2) and v3.writable(obj, 2)
    assert not v3.readable(obj, 3)  # bit 0 clear: 4 is "authenticated request" only
    assert v1.callable(obj, 1) and not v1.callable(obj, 2)
    assert not v1.readable(obj, 9)  # not listed: not readable


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "not an array"),
        ([[8, 0, LN]], "not a structure of 4"),
        ([[8, 0, "0.0.1.0.0.255", [[], []]]], "not an octet string"),
        ([[8, 0, b"\x00\x01", [[], []]]], "6 bytes"),
        ([[8, 0, LN, [[]]]], "not a structure of 2"),
        ([[8, 0, LN, [[[2]], []]]], r"attribute access\[0\] is not a structure"),
        ([["8", 0, LN, [[], []]]], "class is not an integer"),
    ],
)
def test_a_malformed_object_list_is_refused_naming_the_entry(value: object, message: str) -> None:
    with pytest.raises(ViewError, match=message):
        parse_object_list(value, version=1)


def _status(
    view: AssociationView | None,
    obis: str,
    *,
    attribute: int = 2,
    method: int = 0,
    phases: int = 3,
    client: int = 17,
) -> Status:
    plan = plan_reads(view, IDIS, phases, client)
    item = plan.item(obis, attribute=attribute, method=method)
    assert item is not None
    return item.status


def test_without_a_view_everything_is_asked_for() -> None:
    plan = plan_reads(None, IDIS, 3, 16)
    assert not plan.view_known
    assert {i.status for i in plan.items} == {Status.UNCHECKED}
    assert all(i.asked for i in plan.items)
    single = plan_reads(None, IDIS, 1, 16)
    assert single.item("1.0.52.7.0.255", attribute=2) is None  # L2 voltage: three-phase only


def test_missing_denied_and_wrong_class_objects_are_not_asked_for() -> None:
    meter = SimulatedMeter(0, history_start=0.0, behaviour=behaviour("denied-register,missing-log"))
    reader = parse_object_list(_decoded(meter, Role.READER), version=1)
    plan = plan_reads(reader, IDIS, 3, 17)
    assert plan.view_known
    assert _status(reader, "1.0.14.7.0.255") is Status.DENIED
    assert _status(reader, "0.0.99.98.2.255") is Status.MISSING
    assert _status(reader, "0.0.99.98.0.255") is Status.READ
    assert _status(reader, "0.0.96.3.10.255", attribute=0, method=1) is Status.DENIED
    denied = plan.item("1.0.14.7.0.255", attribute=2)
    assert denied is not None and denied.reason == (
        "1.0.14.7.0.255 attribute 2 may not be read by client 17"
    )
    assert [i.obis for i in plan.skipped(Step.EVENTS)] == ["0.0.99.98.2.255"]
    odd = AssociationView(
        version=1,
        objects=(CosemObject(class_id=1, version=0, obis="1.0.32.7.0.255"),),
    )
    assert _status(odd, "1.0.32.7.0.255") is Status.MISSING  # class 1 in the view, not 3


def test_the_simulator_behaviours_shape_its_objects() -> None:
    quirky = SimulatedMeter(
        0,
        history_start=0.0,
        behaviour=behaviour("per-client-counter,odd-unit,set-hardware-fault,vendor-events"),
    )
    names = {spec.obis for spec in quirky.objects.object_list}
    assert O.ln("0.0.43.1.1.255") in names and O.INVOCATION_COUNTER not in names
    none = SimulatedMeter(0, history_start=0.0, behaviour=behaviour("no-counter"))
    assert all(not O.text(s.obis).startswith("0.0.43.1.") for s in none.objects.object_list)
    scaler_unit = quirky.objects.get(
        Reference(3, O.POWER_FACTOR, 3), Role.PUBLIC, AssociationInfo(16, Role.PUBLIC)
    )
    assert scaler_unit is not None and [i.value for i in scaler_unit.items()] == [-3, 0]  # type: ignore[union-attr]
    from adapters.dlms import axdr
    from adapters.dlms.simulator.apdu import DataAccessResult as SimResult

    answer = quirky.objects.set(Reference(8, O.CLOCK, 2), axdr.u8(0), Role.READER)
    assert answer is SimResult.HARDWARE_FAULT
    assert quirky.behaviour.code(62) == 33
    with pytest.raises(ValueError, match="unknown meter behaviour 'nope'"):
        behaviour("idis,nope")


def test_result_codes_and_unknown_units() -> None:
    assert result_name(1) == "hardware-fault"
    assert result_name(DataAccessResult.READ_WRITE_DENIED) == "read-write-denied"
    assert result_name(77) == "result 77"
    flagged = Scaling.of("1.0.13.7.0.255", ScalerUnit(-3, 0))
    assert (flagged.quality, flagged.apply(987)) == (Quality.UNIT_UNVERIFIED, 0.987)
    assert Scaling.of("1.0.13.7.0.255", ScalerUnit(-3, 255)).quality == Quality.VALID
    raw = Scaling.unverified("1.0.32.7.0.255")
    assert (raw.quality, raw.apply(2301)) == (Quality.UNIT_UNVERIFIED, 2301.0)
    with pytest.raises(UnitMismatch, match="unit code 30 \\(Wh\\)"):
        Scaling.of("1.0.32.7.0.255", ScalerUnit(0, 30))
