"""Campaign aggregate: its state machine, concurrency and per-cell limits, bounded retries."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from domain.campaign import (
    Campaign,
    CampaignKind,
    CampaignLimits,
    CampaignSpec,
    CampaignStatus,
    CohortFilter,
    CohortMember,
    MeterState,
    Skip,
    campaign_command_id,
)
from domain.errors import Conflict, ValidationFailed
from domain.load_limit import LoadLimit
from domain.meta import EventMeta

META = EventMeta(actor="ada", correlation_id="c-1")
LIMIT = LoadLimit(threshold_normal_w=5000.0, threshold_emergency_w=2000.0)


def member(serial: str, cell: str | None = None) -> CohortMember:
    return CohortMember(
        meter_id=uuid4(), serial=serial, manufacturer="ACME", model="X1", concentrator_id=cell
    )


def spec(**limits: int) -> CampaignSpec:
    return CampaignSpec(
        name="limit 5 kW",
        kind=CampaignKind.LOAD_LIMIT,
        cohort=CohortFilter(region="North"),
        limits=CampaignLimits(**limits),
        load_limit=LIMIT,
    )


def campaign(
    members: list[CohortMember], skipped: list[Skip] | None = None, **limits: int
) -> Campaign:
    return Campaign.start(uuid4(), spec(**limits), members, skipped or [], META)


def start_all(c: Campaign) -> list[str]:
    chosen = c.next_to_start()
    for serial in chosen:
        c.start_meter(serial, META)
    return chosen


def test_concurrency_limit_bounds_running_meters() -> None:
    c = campaign([member(f"M{i}") for i in range(5)], concurrency=2, per_cell=5)
    assert start_all(c) == ["M0", "M1"]
    assert c.next_to_start() == []
    c.meter_succeeded("M0", META)
    assert start_all(c) == ["M2"]


def test_per_cell_limit_counts_concentrators_and_lone_meters_are_their_own_cell() -> None:
    members = [member("A1", "C1"), member("A2", "C1"), member("A3", "C1"), member("B1", "C2")]
    members += [member("L1"), member("L2")]
    c = campaign(members, concurrency=10, per_cell=1)
    assert start_all(c) == ["A1", "B1", "L1", "L2"]
    c.meter_failed("A1", "unreachable", META)
    # A1 waits for another attempt; a first attempt (A2) goes before it in the same cell
    assert start_all(c) == ["A2"]


def test_start_meter_refuses_beyond_limits_and_twice() -> None:
    c = campaign([member("M1", "C"), member("M2", "C")], per_cell=1)
    c.start_meter("M1", META)
    with pytest.raises(Conflict, match="limit"):
        c.start_meter("M2", META)
    with pytest.raises(Conflict, match="RUNNING"):
        c.start_meter("M1", META)


def test_retries_are_bounded_by_max_attempts() -> None:
    c = campaign([member("M1")], max_attempts=2)
    c.start_meter("M1", META)
    assert c.meter_failed("M1", "timeout", META) is False
    assert c.counts()[MeterState.PENDING] == 1
    c.start_meter("M1", META)
    assert c.meters["M1"].attempts == 2
    assert c.meter_failed("M1", "timeout again", META) is True
    assert c.meters["M1"].state is MeterState.FAILED
    assert c.status is CampaignStatus.COMPLETED


def test_pause_stops_starts_and_resume_continues() -> None:
    c = campaign([member("M1"), member("M2")], concurrency=1)
    c.start_meter("M1", META)
    assert c.pause(META) is True
    assert c.pause(META) is False
    c.meter_succeeded("M1", META)  # a running meter still finishes while paused
    assert c.next_to_start() == []
    with pytest.raises(Conflict):
        c.start_meter("M2", META)
    assert c.resume(META) is True
    assert start_all(c) == ["M2"]
    c.meter_succeeded("M2", META)
    assert c.status is CampaignStatus.COMPLETED
    with pytest.raises(Conflict):
        c.resume(META)


def test_cancel_skips_pending_meters_and_lets_running_ones_finish() -> None:
    c = campaign([member("M1"), member("M2"), member("M3")], concurrency=1)
    c.start_meter("M1", META)
    c.cancel("wrong cohort", META)
    assert c.counts()[MeterState.SKIPPED] == 2
    assert c.meters["M2"].reason == "campaign cancelled: wrong cohort"
    assert c.next_to_start() == []
    assert c.meter_failed("M1", "timeout", META) is True  # no retry once cancelled
    assert c.status is CampaignStatus.CANCELLED
    with pytest.raises(Conflict):
        c.cancel("again", META)


def test_skipped_members_are_never_started_and_command_ids_are_stable() -> None:
    c = campaign([member("M1"), member("M2")], [Skip(serial="M2", reason="model X2")])
    assert c.next_to_start() == ["M1"]
    first = c.start_meter("M1", META)
    assert first == campaign_command_id(c.id, "m1")
    c.meter_failed("M1", "timeout", META)
    assert c.start_meter("M1", META) == first


def test_events_rebuild_the_same_state() -> None:
    c = campaign([member("M1", "C"), member("M2", "C")], per_cell=1, max_attempts=2)
    c.start_meter("M1", META)
    c.meter_failed("M1", "timeout", META)
    c.start_meter("M2", META)
    c.pause(META)
    rebuilt: Campaign | None = None
    for e in c.collect_events():
        rebuilt = e.mutate(rebuilt)  # type: ignore[assignment]
    assert rebuilt is not None
    assert rebuilt.status is CampaignStatus.PAUSED
    assert {s: (p.state, p.attempts) for s, p in rebuilt.meters.items()} == {
        "M1": (MeterState.PENDING, 1),
        "M2": (MeterState.RUNNING, 1),
    }


def test_spec_rules_name_their_fields() -> None:
    bad = CampaignSpec(
        name="",
        kind=CampaignKind.FIRMWARE,
        cohort=CohortFilter(region="North", serials=("M1",)),
        limits=CampaignLimits(concurrency=0, per_cell=0, max_attempts=11),
        load_limit=LIMIT,
    )
    with pytest.raises(ValidationFailed) as exc:
        bad.check()
    assert {e.field for e in exc.value.errors} >= {
        "name",
        "cohort",
        "limits.concurrency",
        "limits.perCell",
        "limits.maxAttempts",
        "imageId",
        "loadLimit",
    }
    with pytest.raises(ValidationFailed, match="no registered meter"):
        Campaign.start(uuid4(), spec(), [], [], META)


def test_an_empty_filter_is_refused() -> None:
    s = CampaignSpec(
        name="x", kind=CampaignKind.LOAD_LIMIT, cohort=CohortFilter(), load_limit=LIMIT
    )
    with pytest.raises(ValidationFailed) as exc:
        s.check()
    assert [e.field for e in exc.value.errors] == ["cohort"]


def test_campaign_id_is_kept() -> None:
    id_ = UUID(int=7)
    assert Campaign.start(id_, spec(), [member("M1")], [], META).id == id_


def test_meters_awaiting_a_scheduled_activation_free_their_slot() -> None:
    c = campaign([member("M1", "C"), member("M2", "C")], concurrency=1, per_cell=1)
    c.start_meter("M1", META)
    assert c.next_to_start() == []
    c.meter_awaiting_activation("M1", META)
    assert c.next_to_start() == ["M2"]
    c.start_meter("M2", META)
    c.meter_awaiting_activation("M2", META)
    assert c.counts()[MeterState.AWAITING_ACTIVATION] == 2
    c.meter_succeeded("M1", META)
    assert c.status is CampaignStatus.RUNNING  # M2 still awaits its activation
    c.meter_failed("M2", "runs 1.0 after the activation", META)
    assert c.meters["M2"].state is MeterState.PENDING  # another attempt
    with pytest.raises(Conflict):
        c.meter_awaiting_activation("M2", META)


def test_a_cohort_above_the_limit_is_refused() -> None:
    from domain.campaign import MAX_COHORT

    with pytest.raises(ValidationFailed, match="at most"):
        Campaign.start(uuid4(), spec(), [member(f"M{i}") for i in range(MAX_COHORT + 1)], [], META)
