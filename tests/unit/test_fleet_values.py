"""Firmware images, TOU plans, fleet command arguments and read-back comparison."""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import uuid4

import pytest

from domain.errors import Conflict, NotFound, ValidationFailed
from domain.firmware import MAX_IMAGE_BYTES, FirmwareImage, describe, image_id
from domain.load_limit import LoadLimit
from domain.meta import EventMeta
from domain.meter import Meter
from domain.read_back import differing_fields
from domain.remote_commands import CommandArgs, CommandKind, CommandResult, FirmwareStep
from domain.tou_calendar import Season
from domain.tou_plan import TouPlan, tou_plan_id
from domain.values import ConnectionProfile, MeterSpec
from tests.unit.test_tou_calendar import calendar

META = EventMeta(actor="ada", correlation_id="c-1")


def test_image_rules_name_the_field() -> None:
    spec = describe(b"\x01" * 10, " FW-2.0 ", "ACME", "X1")
    assert spec.identifier == "FW-2.0" and spec.size == 10 and len(spec.sha256) == 64
    with pytest.raises(ValidationFailed) as exc:
        describe(b"", "has space", "", "X1")
    assert {e.field for e in exc.value.errors} == {"identifier", "manufacturer", "image"}
    assert MAX_IMAGE_BYTES >= 1_000_000


def test_image_deletion_is_final() -> None:
    image = FirmwareImage(spec=describe(b"abc", "FW1", "ACME", "X1"), meta=META)
    assert image.id == image_id("ACME", "X1", "FW1")
    image.delete(META)
    with pytest.raises(Conflict, match="deleted"):
        image.delete(META)


def test_tou_plan_versions() -> None:
    plan = TouPlan.create("Residential TOU", calendar(), META)
    assert plan.id == tou_plan_id(" Residential TOU ")
    assert plan.revise(calendar(), META) is False
    winter_only = calendar(seasons=(Season(name="W", start=date(2000, 1, 1), week="WK"),))
    assert plan.revise(winter_only, META) is True
    assert plan.latest == 2 and plan.calendar(1) == calendar()
    with pytest.raises(NotFound):
        plan.calendar(3)
    with pytest.raises(ValidationFailed):
        plan.revise(calendar(name=""), META)


def test_fleet_command_arguments() -> None:
    CommandArgs(image_id=uuid4()).check(CommandKind.FIRMWARE_UPDATE)
    with pytest.raises(ValidationFailed) as exc:
        CommandArgs(quantities=("1.0.1.8.0.255",)).check(CommandKind.WRITE_CALENDAR)
    assert {e.field for e in exc.value.errors} == {"quantities", "touPlanId", "touPlanVersion"}
    with pytest.raises(ValidationFailed) as exc:
        bad = LoadLimit(threshold_normal_w=1.0, threshold_emergency_w=2.0)
        CommandArgs(load_limit=bad).check(CommandKind.SET_LOAD_LIMIT)
    assert [e.field for e in exc.value.errors] == ["loadLimit.thresholdEmergencyW"]
    with pytest.raises(ValidationFailed):
        CommandArgs(tou_plan_id=uuid4(), tou_plan_version=0).check(CommandKind.WRITE_CALENDAR)
    at = datetime(2027, 1, 1, 2, 0, tzinfo=UTC)
    CommandArgs(image_id=uuid4(), activate_at=at).check(CommandKind.FIRMWARE_UPDATE)
    with pytest.raises(ValidationFailed) as exc:
        CommandArgs(image_id=uuid4(), activate_at=at.replace(tzinfo=None)).check(
            CommandKind.FIRMWARE_UPDATE
        )
    assert [(e.field, e.rule) for e in exc.value.errors] == [("activateAt", "timezone")]
    with pytest.raises(ValidationFailed) as exc:
        CommandArgs(
            load_limit=LoadLimit(threshold_normal_w=2.0, threshold_emergency_w=1.0), activate_at=at
        ).check(CommandKind.SET_LOAD_LIMIT)
    assert [(e.field, e.rule) for e in exc.value.errors] == [("activateAt", "not-allowed")]


def test_read_back_differences_are_named() -> None:
    written = calendar()
    read = calendar(name="OTHER", special_days=())
    assert differing_fields(written, read) == ["name", "specialDays"]
    a = LoadLimit(threshold_normal_w=5.0, threshold_emergency_w=1.0)
    b = LoadLimit(threshold_normal_w=5.0, threshold_emergency_w=2.0)
    assert differing_fields(a, b) == ["thresholdEmergencyW"]
    assert differing_fields(a, a) == []


def meter() -> Meter:
    return Meter.register(
        MeterSpec(
            serial="M1",
            manufacturer="ACME",
            model="X1",
            firmware="1.0",
            phases=3,
            region="North",
            area="A",
            connection=ConnectionProfile(host="127.0.0.1", port=4059),
        ),
        META,
    )


def test_firmware_steps_and_confirmation_change_the_meters_firmware() -> None:
    m = meter()
    command = uuid4()
    m.request_command(command, CommandKind.FIRMWARE_UPDATE, CommandArgs(image_id=uuid4()), META)
    with pytest.raises(Conflict):
        m.record_firmware_step(command, FirmwareStep.TRANSFER_STARTED, 0, 0, META)
    m.mark_command_sent(command, META)
    m.record_firmware_step(command, FirmwareStep.TRANSFER_STARTED, 0, 0, META)
    m.record_firmware_step(command, FirmwareStep.PROGRESS, 10, 100, META)
    m.confirm_command(command, CommandResult(firmware="2.0"), META)
    assert m.spec.firmware == "2.0"
    names = [type(e).__name__ for e in m.collect_events()]
    assert names[-4:] == [
        "FirmwareUpdateStepped",
        "FirmwareUpdateStepped",
        "RemoteCommandConfirmed",
        "FirmwareChanged",
    ]
