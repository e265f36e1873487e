"""The Alert aggregate and alert desk: state machine, dedup (also concurrent), priority, replay."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from functools import reduce
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commands.alerts import AlertDesk
from commands.codec import MsgspecMapper
from commands.context import SYSTEM, Actor, CommandContext, Role
from domain.alert import (
    Alert,
    AlertSeries,
    AlertSpec,
    AlertStatus,
    AlertType,
    Severity,
    alert_id,
    priority_score,
)
from domain.detection import AlertDecision, Verdict
from domain.errors import Conflict, Forbidden, ValidationFailed
from domain.meta import EventMeta

T0 = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)
SPEC = AlertSpec(
    alert_type=AlertType.OVERLOAD,
    severity=Severity.HIGH,
    region="North",
    dedup_key="OVERLOAD:North",
    message="region North overloaded",
    evidence={"peakLoadPct": 91.5, "windowsAbove": 3, "from": "2025-03-03T11:30:00+00:00"},
)
OPERATOR = CommandContext(actor=Actor(subject="olga", roles=frozenset({Role.OPERATOR})))
VIEWER = CommandContext(actor=Actor(subject="vic", roles=frozenset({Role.VIEWER})))


def meta(n: int = 0, key: str | None = None) -> EventMeta:
    """Metadata of the n-th test command."""
    fingerprint = None if key is None else f"fp-{key}"
    return EventMeta(
        actor=f"user-{n}", correlation_id=f"c-{n}", idempotency_key=key, fingerprint=fingerprint
    )


def system(key: str | None = None) -> CommandContext:
    """A detector's command context."""
    return CommandContext(actor=SYSTEM, idempotency_key=key)


def decision(key: str = "OVERLOAD:North", severity: Severity = Severity.HIGH) -> AlertDecision:
    """A RAISE decision for the given cause."""
    return AlertDecision(
        verdict=Verdict.RAISE,
        alert_type=AlertType.OVERLOAD,
        severity=severity,
        region="North",
        dedup_key=key,
        message="overloaded",
        observed_at=T0,
        evidence={"peakLoadPct": 90.0},
    )


def raised() -> Alert:
    """A freshly raised alert whose events are already collected."""
    alert = Alert.open(SPEC, 1, T0, meta())
    alert.collect_events()
    return alert


# -- state machine -----------------------------------------------------------------------


def test_raise_opens_the_alert_with_the_spec() -> None:
    alert = Alert.open(SPEC, 1, T0, meta())

    assert alert.status is AlertStatus.OPEN
    assert (alert.alert_type, alert.severity, alert.region) == (
        AlertType.OVERLOAD,
        Severity.HIGH,
        "North",
    )
    assert alert.id == alert_id("OVERLOAD:North", 1)
    assert (alert.occurrences, alert.raised_at, alert.last_seen) == (1, T0, T0)


def test_recurrence_counts_and_keeps_the_latest_evidence() -> None:
    alert = raised()

    alert.recur(T0 + timedelta(minutes=15), {"peakLoadPct": 95.0}, Severity.HIGH, meta(1))
    alert.recur(T0 + timedelta(minutes=30), {"peakLoadPct": 96.0}, Severity.HIGH, meta(2))

    assert alert.occurrences == 3
    assert alert.last_seen == T0 + timedelta(minutes=30)
    assert alert.evidence == {"peakLoadPct": 96.0}
    assert [type(e) for e in alert.collect_events()] == [Alert.Recurred, Alert.Recurred]


def test_recurrence_with_higher_severity_escalates_and_lower_does_not() -> None:
    alert = raised()

    alert.recur(T0, {}, Severity.LOW, meta(1))
    alert.recur(T0, {}, Severity.CRITICAL, meta(2))

    assert alert.severity is Severity.CRITICAL
    events = alert.collect_events()
    assert [type(e) for e in events] == [Alert.Recurred, Alert.Recurred, Alert.Escalated]
    assert events[-1].previous is Severity.HIGH  # type: ignore[attr-defined]


def test_acknowledge_then_resolve() -> None:
    alert = raised()

    alert.acknowledge(T0 + timedelta(minutes=5), meta(1))
    alert.resolve(T0 + timedelta(minutes=9), "shed load", meta(2))

    assert alert.status is AlertStatus.RESOLVED
    assert (alert.acknowledged_by, alert.acknowledged_at) == ("user-1", T0 + timedelta(minutes=5))
    assert (alert.resolved_by, alert.resolution_note) == ("user-2", "shed load")
    assert not alert.auto_resolved


def test_auto_resolve_records_the_clearing_evidence() -> None:
    alert = raised()

    alert.auto_resolve(T0 + timedelta(hours=1), {"peakLoadPct": 60.0}, meta(1))

    assert alert.status is AlertStatus.RESOLVED
    assert alert.auto_resolved
    assert alert.clear_evidence == {"peakLoadPct": 60.0}


@pytest.mark.parametrize(
    "command",
    [
        lambda a: a.acknowledge(T0, meta(9)),
        lambda a: a.resolve(T0, "again", meta(9)),
        lambda a: a.auto_resolve(T0, {}, meta(9)),
        lambda a: a.recur(T0, {}, Severity.HIGH, meta(9)),
    ],
    ids=["acknowledge", "resolve", "auto-resolve", "recur"],
)
def test_a_resolved_alert_refuses_every_command(command: Any) -> None:
    alert = raised()
    alert.resolve(T0, "done", meta(1))

    with pytest.raises(Conflict):
        command(alert)


def test_acknowledging_twice_is_a_conflict() -> None:
    alert = raised()
    alert.acknowledge(T0, meta(1))

    with pytest.raises(Conflict):
        alert.acknowledge(T0, meta(2))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"region": ""}, "region"),
        ({"dedup_key": ""}, "dedupKey"),
        ({"message": " "}, "message"),
        ({"evidence": {"x": float("nan")}}, "evidence.x"),
        ({"evidence": {str(i): i for i in range(40)}}, "evidence"),
    ],
)
def test_invalid_specs_are_refused(changes: dict[str, Any], field: str) -> None:
    spec = AlertSpec(**{**{f: getattr(SPEC, f) for f in SPEC.__struct_fields__}, **changes})

    with pytest.raises(ValidationFailed) as failed:
        Alert.open(spec, 1, T0, meta())

    assert field in {e.field for e in failed.value.errors}


def test_series_refuses_a_second_open_and_a_stale_close() -> None:
    series = AlertSeries(dedup_key="K", meta=meta())
    assert series.open_next(meta()) == (alert_id("K", 1), 1)

    with pytest.raises(Conflict):
        series.open_next(meta())
    with pytest.raises(Conflict):
        series.close(2, meta())
    series.close(1, meta())
    assert series.open_next(meta()) == (alert_id("K", 2), 2)


# -- priority ----------------------------------------------------------------------------

severities = st.sampled_from(list(Severity))
ages = st.floats(min_value=0, max_value=1e7, allow_nan=False)
customers = st.integers(min_value=0, max_value=10**7)


@given(severities, severities, ages, customers)
def test_priority_is_monotonic_in_severity(a: Severity, b: Severity, age: float, n: int) -> None:
    low, high = sorted((a, b), key=lambda s: s.rank)
    assert priority_score(low, age, n) <= priority_score(high, age, n)


@given(severities, ages, ages, customers)
def test_priority_is_monotonic_in_age(s: Severity, a: float, b: float, n: int) -> None:
    assert priority_score(s, min(a, b), n) <= priority_score(s, max(a, b), n)


@given(severities, ages, customers, customers)
def test_priority_is_monotonic_in_customers(s: Severity, age: float, m: int, n: int) -> None:
    assert priority_score(s, age, min(m, n)) <= priority_score(s, age, max(m, n))


def test_alert_priority_grows_with_age_and_reach() -> None:
    alert = raised()

    assert alert.priority(T0, 0) == 10 * Severity.HIGH.weight
    assert alert.priority(T0 + timedelta(hours=2), 0) > alert.priority(T0, 0)
    assert alert.priority(T0, 100) > alert.priority(T0, 0)


# -- events, replay and codec ------------------------------------------------------------


def lifecycle() -> tuple[Alert, list[EventMeta]]:
    """An alert taken through recurrence, escalation, acknowledgement and resolution."""
    metas = [meta(i, key=f"k{i}") for i in range(4)]
    alert = Alert.open(SPEC, 1, T0, metas[0])
    alert.recur(T0 + timedelta(minutes=15), {"peakLoadPct": 101.0}, Severity.CRITICAL, metas[1])
    alert.acknowledge(T0 + timedelta(minutes=20), metas[2])
    alert.resolve(T0 + timedelta(minutes=40), "load shed", metas[3])
    return alert, metas


def all_events() -> list[Any]:
    """One of every Alert and AlertSeries event."""
    alert, _ = lifecycle()
    other = Alert.open(SPEC, 2, T0, meta(5))
    other.auto_resolve(T0, {"peakLoadPct": 50.0, "note": None, "ok": True}, meta(6))
    series = AlertSeries(dedup_key="K", meta=meta())
    series.open_next(meta())
    series.close(1, meta())
    return [*alert.collect_events(), *other.collect_events(), *series.collect_events()]


def test_every_event_carries_the_commands_meta() -> None:
    alert, metas = lifecycle()

    events = alert.collect_events()

    expected = [metas[0], metas[1], metas[1], metas[2], metas[3]]
    assert [e.meta for e in events] == expected  # type: ignore[attr-defined]


def test_replaying_the_events_rebuilds_the_same_alert() -> None:
    alert, _ = lifecycle()
    events = alert.collect_events()

    rebuilt = reduce(lambda aggregate, event: event.mutate(aggregate), events, None)

    assert isinstance(rebuilt, Alert)
    assert vars(rebuilt) == vars(alert)


def test_the_fixture_covers_every_event_type() -> None:
    assert {type(e) for e in all_events()} == {
        Alert.Raised,
        Alert.Recurred,
        Alert.Escalated,
        Alert.Acknowledged,
        Alert.Resolved,
        Alert.AutoResolved,
        AlertSeries.Started,
        AlertSeries.Opened,
        AlertSeries.Closed,
    }


@pytest.mark.parametrize("index", range(10))
def test_every_event_round_trips_through_the_codec(index: int) -> None:
    mapper = MsgspecMapper()
    event = all_events()[index]

    decoded: Any = mapper.to_domain_event(mapper.to_stored_event(event))

    assert type(decoded) is type(event)
    assert vars(decoded) == vars(event)
    for name, value in vars(event).items():
        assert type(vars(decoded)[name]) is type(value), name


def test_decoded_events_rebuild_the_alert_with_enum_members() -> None:
    mapper = MsgspecMapper()
    alert, _ = lifecycle()
    events: list[Any] = [
        mapper.to_domain_event(mapper.to_stored_event(e)) for e in alert.collect_events()
    ]

    rebuilt: Any = reduce(lambda a, e: e.mutate(a), events, None)

    assert vars(rebuilt) == vars(alert)
    assert rebuilt.severity is Severity.CRITICAL
    assert rebuilt.alert_type is AlertType.OVERLOAD


# -- the alert desk (popo persistence) ---------------------------------------------------


def test_repeats_add_occurrences_to_one_open_alert() -> None:
    desk = AlertDesk()

    first = desk.raise_or_recur(decision(), system())
    second = desk.raise_or_recur(decision(severity=Severity.CRITICAL), system())

    assert first.opened and not second.opened
    assert second.alert.id == first.alert.id
    stored = desk.get(first.alert.id)
    assert (stored.occurrences, stored.severity) == (2, Severity.CRITICAL)


def test_after_resolution_the_cause_opens_a_new_alert() -> None:
    desk = AlertDesk()
    first = desk.raise_or_recur(decision(), system())
    desk.acknowledge(first.alert.id, OPERATOR)
    desk.resolve(first.alert.id, "fixed", OPERATOR)

    again = desk.raise_or_recur(decision(), system())

    assert again.opened
    assert again.alert.id == alert_id("OVERLOAD:North", 2)
    assert desk.get(first.alert.id).status is AlertStatus.RESOLVED
    assert desk.open_alert("OVERLOAD:North") is not None


def test_auto_resolve_closes_the_open_alert_and_is_a_no_op_without_one() -> None:
    desk = AlertDesk()
    assert desk.auto_resolve("OVERLOAD:North", {}, system()) is None
    opened = desk.raise_or_recur(decision(), system())

    done = desk.auto_resolve("OVERLOAD:North", {"peakLoadPct": 40.0}, system())

    assert done is not None and done.alert.auto_resolved
    assert desk.open_alert("OVERLOAD:North") is None
    assert desk.auto_resolve("OVERLOAD:North", {}, system()) is None
    with pytest.raises(Conflict):
        desk.resolve(opened.alert.id, "late", OPERATOR)


def test_concurrent_raises_open_exactly_one_alert() -> None:
    desk = AlertDesk()
    threads = 8
    per_thread = 5
    barrier = threading.Barrier(threads)
    opened: list[bool] = []
    errors: list[BaseException] = []

    def work() -> None:
        barrier.wait()
        try:
            for _ in range(per_thread):
                opened.append(desk.raise_or_recur(decision(), system()).opened)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()

    assert errors == []
    assert opened.count(True) == 1
    alert = desk.open_alert("OVERLOAD:North")
    assert alert is not None
    assert alert.occurrences == threads * per_thread
    series = desk.series("OVERLOAD:North")
    assert series is not None and series.generation == 1


def test_idempotent_raise_is_replayed() -> None:
    desk = AlertDesk()
    desk.raise_or_recur(decision(), system())

    once = desk.raise_or_recur(decision(), system("k1"))
    twice = desk.raise_or_recur(decision(), system("k1"))

    assert not once.replayed and twice.replayed
    assert desk.get(once.alert.id).occurrences == 2


def test_roles_are_enforced() -> None:
    desk = AlertDesk()
    with pytest.raises(Forbidden):
        desk.raise_or_recur(decision(), OPERATOR)
    opened = desk.raise_or_recur(decision(), system())
    with pytest.raises(Forbidden):
        desk.acknowledge(opened.alert.id, VIEWER)
    with pytest.raises(Forbidden):
        desk.resolve(opened.alert.id, "x", VIEWER)
    with pytest.raises(Forbidden):
        desk.auto_resolve("OVERLOAD:North", {}, OPERATOR)


def test_only_raise_decisions_raise() -> None:
    desk = AlertDesk()
    clear = AlertDecision(
        verdict=Verdict.CLEAR,
        alert_type=AlertType.OVERLOAD,
        severity=Severity.HIGH,
        region="North",
        dedup_key=str(uuid4()),
        message="fine",
        observed_at=T0,
    )

    with pytest.raises(ValidationFailed):
        desk.raise_or_recur(clear, system())


def test_a_resolved_alert_is_not_reopened_by_the_evidence_it_already_had() -> None:
    desk = AlertDesk()
    first = desk.raise_or_recur(decision(), system("window-1"))
    desk.raise_or_recur(decision(), system("window-2"))  # a recurrence on new evidence
    desk.resolve(first.alert.id, "load shed", OPERATOR)

    for key in ("window-1", "window-2"):  # the detector runs again on the same windows
        again = desk.raise_or_recur(decision(), system(key))
        assert again.replayed and again.alert.id == first.alert.id
    assert desk.open_alert("OVERLOAD:North") is None

    fresh = desk.raise_or_recur(decision(), system("window-3"))  # a new hot window: news
    assert fresh.opened and fresh.alert.id != first.alert.id and fresh.alert.generation == 2
