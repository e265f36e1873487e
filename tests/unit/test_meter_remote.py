"""The Meter's DLMS side: remote-command lifecycle, relay state, event-log dedup, key versions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from commands.codec import MsgspecMapper
from domain.errors import Conflict, NotFound, ValidationFailed
from domain.meta import EventMeta
from domain.meter import Meter
from domain.meter_events import DISCONNECTOR_LOG, STANDARD_LOG, LogEntry, MeterEventKind
from domain.meter_keys import KeyKind, MeterKeys
from domain.remote_commands import (
    MAX_KEPT_COMMANDS,
    CommandArgs,
    CommandKind,
    CommandResult,
    CommandStatus,
    ReadValue,
    keyed_command_id,
)
from domain.values import ConnectionProfile, MeterSpec

SPEC = MeterSpec(
    serial="SIM0000001",
    manufacturer="HES",
    model="Sim",
    firmware="1",
    phases=3,
    region="North",
    area="Zone A",
    connection=ConnectionProfile(host="127.0.0.1", port=4100),
)
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def meta(actor: str = "olga", key: str | None = None) -> EventMeta:
    """Event metadata of a test command."""
    return EventMeta(actor=actor, correlation_id="c", idempotency_key=key, fingerprint=key)


def meter() -> Meter:
    """A registered meter with its registration event collected."""
    m = Meter.register(SPEC, meta("reg"))
    m.collect_events()
    return m


def replayed(m: Meter, events: Sequence[Any]) -> Meter:
    """The aggregate rebuilt from its events after a round trip through the stored encoding."""
    mapper = MsgspecMapper()
    copy: Meter | None = None
    for e in events:
        copy = mapper.to_domain_event(mapper.to_stored_event(e)).mutate(copy)  # type: ignore[attr-defined]
    assert copy is not None
    return copy


# -- remote commands ---------------------------------------------------------------------


def test_disconnect_lifecycle_requested_sent_confirmed_sets_relay_state() -> None:
    m = Meter.register(SPEC, meta("reg"))
    cid = uuid4()
    command = m.request_command(cid, CommandKind.DISCONNECT, CommandArgs(), meta())
    assert (command.status, command.attempt, command.requested_by) == (
        CommandStatus.REQUESTED,
        1,
        "olga",
    )
    m.mark_command_sent(cid, meta("system"))
    assert m.command(cid).status is CommandStatus.SENT
    m.confirm_command(cid, CommandResult(relay_connected=False, control_state=0), meta("system"))
    assert m.command(cid).status is CommandStatus.CONFIRMED
    assert m.relay_connected is False

    events = m.collect_events()
    assert [type(e).__name__ for e in events] == [
        "Registered",
        "RemoteCommandRequested",
        "RemoteCommandSent",
        "RemoteCommandConfirmed",
    ]
    copy = replayed(m, events)
    assert copy.relay_connected is False
    assert copy.command(cid) == m.command(cid)


def test_failed_command_can_be_retried_as_a_new_attempt() -> None:
    m = meter()
    cid = uuid4()
    m.request_command(cid, CommandKind.RECONNECT, CommandArgs(), meta())
    m.mark_command_sent(cid, meta("system"))
    m.fail_command(cid, "meter unreachable:\n connection refused", meta("system"))
    failed = m.command(cid)
    assert (failed.status, failed.attempt, failed.reason) == (
        CommandStatus.FAILED,
        1,
        "meter unreachable: connection refused",
    )
    m.retry_command(cid, meta())
    assert (m.command(cid).status, m.command(cid).attempt) == (CommandStatus.REQUESTED, 2)
    m.mark_command_sent(cid, meta("system"))
    m.confirm_command(cid, CommandResult(relay_connected=True), meta("system"))
    assert m.relay_connected is True
    events = m.collect_events()
    sent = [e for e in events if isinstance(e, Meter.RemoteCommandSent)]
    assert [e.attempt for e in sent] == [1, 2]
    assert replayed_from_registration(m, events).command(cid).attempt == 2


def replayed_from_registration(m: Meter, later: Sequence[Any]) -> Meter:
    """Rebuild a meter whose registration event was collected earlier."""
    first = Meter.register(SPEC, meta("reg")).collect_events()
    return replayed(m, [*first, *later])


@pytest.mark.parametrize(
    ("action", "status"),
    [
        ("confirm", CommandStatus.REQUESTED),
        ("retry", CommandStatus.REQUESTED),
        ("send", CommandStatus.SENT),
        ("retry", CommandStatus.SENT),
        ("send", CommandStatus.CONFIRMED),
        ("fail", CommandStatus.CONFIRMED),
        ("confirm", CommandStatus.FAILED),
    ],
)
def test_transitions_out_of_order_are_refused(action: str, status: CommandStatus) -> None:
    m = meter()
    cid = uuid4()
    m.request_command(cid, CommandKind.SYNC_CLOCK, CommandArgs(), meta())
    if status is not CommandStatus.REQUESTED:
        m.mark_command_sent(cid, meta())
    if status is CommandStatus.CONFIRMED:
        m.confirm_command(cid, CommandResult(), meta())
    if status is CommandStatus.FAILED:
        m.fail_command(cid, "timeout", meta())
    m.collect_events()
    actions: dict[str, Callable[[], object]] = {
        "send": lambda: m.mark_command_sent(cid, meta()),
        "confirm": lambda: m.confirm_command(cid, CommandResult(), meta()),
        "fail": lambda: m.fail_command(cid, "x", meta()),
        "retry": lambda: m.retry_command(cid, meta()),
    }
    with pytest.raises(Conflict, match=str(status)):
        actions[action]()
    assert m.collect_events() == []


def test_one_relay_operation_at_a_time_but_other_kinds_may_run() -> None:
    m = meter()
    first = uuid4()
    m.request_command(first, CommandKind.DISCONNECT, CommandArgs(), meta())
    with pytest.raises(Conflict, match=str(first)):
        m.request_command(uuid4(), CommandKind.RECONNECT, CommandArgs(), meta())
    m.request_command(uuid4(), CommandKind.SYNC_CLOCK, CommandArgs(), meta())
    m.mark_command_sent(first, meta())
    m.fail_command(first, "timeout", meta())
    m.request_command(uuid4(), CommandKind.RECONNECT, CommandArgs(), meta())


def test_on_demand_read_arguments_are_checked_and_normalised() -> None:
    m = meter()
    with pytest.raises(ValidationFailed) as bad:
        m.request_command(
            uuid4(),
            CommandKind.READ_ON_DEMAND,
            CommandArgs(quantities=("1.0.1.8.0.255", "9.9.9.9.9.9", "energy_import")),
            meta(),
        )
    rules = {(e.field, e.rule) for e in bad.value.errors}
    assert rules == {("quantities[1]", "known"), ("quantities", "unique")}
    with pytest.raises(ValidationFailed) as none:
        m.request_command(uuid4(), CommandKind.READ_ON_DEMAND, CommandArgs(), meta())
    assert [(e.field, e.rule) for e in none.value.errors] == [("quantities", "count")]
    with pytest.raises(ValidationFailed) as extra:
        m.request_command(
            uuid4(), CommandKind.DISCONNECT, CommandArgs(quantities=("voltage_l1",)), meta()
        )
    assert [(e.field, e.rule) for e in extra.value.errors] == [("quantities", "not-allowed")]
    cid = uuid4()
    command = m.request_command(
        cid,
        CommandKind.READ_ON_DEMAND,
        CommandArgs(quantities=("voltage_l1", "1-0:1.8.0*255")),
        meta(),
    )
    assert command.args.quantities == ("1.0.32.7.0.255", "1.0.1.8.0.255")
    m.mark_command_sent(cid, meta())
    value = ReadValue(obis="1.0.32.7.0.255", value=231.4, unit="V", at=T0)
    m.confirm_command(cid, CommandResult(values=(value,)), meta())
    assert m.relay_connected is None  # only relay commands change the relay state
    copy = replayed_from_registration(m, m.collect_events())
    assert copy.command(cid).result == CommandResult(values=(value,))


def test_decommissioned_meter_takes_no_commands() -> None:
    m = meter()
    m.decommission("removed", meta())
    with pytest.raises(Conflict, match="decommissioned"):
        m.request_command(uuid4(), CommandKind.SYNC_CLOCK, CommandArgs(), meta())


def test_unknown_command_is_not_found() -> None:
    with pytest.raises(NotFound):
        meter().mark_command_sent(uuid4(), meta())


def test_keyed_command_ids_are_stable_per_meter_and_key() -> None:
    a, b = UUID(int=1), UUID(int=2)
    assert keyed_command_id(a, "k1") == keyed_command_id(a, "k1")
    assert (
        len({keyed_command_id(a, "k1"), keyed_command_id(a, "k2"), keyed_command_id(b, "k1")}) == 3
    )


def test_finished_commands_beyond_the_limit_are_forgotten_pending_ones_kept() -> None:
    m = meter()
    pending = uuid4()
    m.request_command(pending, CommandKind.SYNC_CLOCK, CommandArgs(), meta())
    for _ in range(MAX_KEPT_COMMANDS + 5):
        cid = uuid4()
        m.request_command(cid, CommandKind.SYNC_CLOCK, CommandArgs(), meta())
        m.mark_command_sent(cid, meta())
        m.confirm_command(cid, CommandResult(), meta())
    assert len(m.remote_commands) == MAX_KEPT_COMMANDS
    assert m.command(pending).status is CommandStatus.REQUESTED


# -- event logs ------------------------------------------------------------------------


def entry(code: int, minutes: float, log: str = STANDARD_LOG) -> LogEntry:
    """An event-log entry ``minutes`` after T0."""
    return LogEntry(log=log, code=code, at=T0 + timedelta(minutes=minutes))


def test_log_entries_are_recorded_once_each_with_their_kind() -> None:
    m = meter()
    first = [entry(1, 0), entry(2, 5), entry(62, 5, DISCONNECTOR_LOG), entry(40, 7)]
    recorded = m.record_log_entries([*first, entry(1, 0)], meta("system"))
    assert recorded == sorted(first, key=lambda e: (e.at, e.log, e.code))
    events: list[Any] = list(m.collect_events())
    assert [(e.code, e.kind) for e in events] == [
        (1, MeterEventKind.POWER_DOWN),
        (2, MeterEventKind.POWER_UP),
        (62, MeterEventKind.RELAY_DISCONNECTED),
        (40, MeterEventKind.TAMPER),
    ]
    # Re-reading an overlapping range records only what is new, also after a replay.
    copy = replayed_from_registration(m, events)
    again = [*first, entry(41, 9), entry(63, 9, DISCONNECTOR_LOG)]
    assert copy.record_log_entries(again, meta("system")) == [
        entry(41, 9),
        entry(63, 9, DISCONNECTOR_LOG),
    ]
    assert m.record_log_entries(again, meta("system"))[0].code == 41


def test_same_time_and_log_with_another_code_is_another_event() -> None:
    m = meter()
    assert len(m.record_log_entries([entry(40, 0), entry(44, 0)], meta())) == 2
    assert m.record_log_entries([entry(40, 0)], meta()) == []


def test_entries_far_behind_the_newest_count_as_handled() -> None:
    m = meter()
    m.record_log_entries([entry(1, 0)], meta())
    m.record_log_entries([entry(2, 60 * 24 * 50)], meta())
    assert m.record_log_entries([entry(1, 0)], meta()) == []
    assert len(m.event_logs[STANDARD_LOG].seen) == 1  # the old one was forgotten


# -- keys --------------------------------------------------------------------------------


def test_key_changes_are_versioned_events_without_key_material() -> None:
    m = meter()
    assert m.change_security_keys([KeyKind.AK, KeyKind.EK], meta("admin")) == 1
    assert m.change_security_keys([KeyKind.LLS], meta("admin")) == 2
    events: list[Any] = list(m.collect_events())
    assert [(e.kinds, e.key_version) for e in events] == [
        ((KeyKind.EK, KeyKind.AK), 1),
        ((KeyKind.LLS,), 2),
    ]
    stored = b"".join(MsgspecMapper().to_stored_event(e).state for e in events)
    assert b"password" not in stored.lower()
    assert set(vars(events[0])) - {"originator_id", "originator_version", "timestamp"} == {
        "kinds",
        "key_version",
        "meta",
    }
    assert replayed_from_registration(m, events).key_version == 2


def test_meter_keys_parse_rules_never_echo_the_value() -> None:
    with pytest.raises(ValidationFailed) as bad:
        MeterKeys.parse("has space", "00112233", "zz" * 16)
    fields = {(e.field, e.rule) for e in bad.value.errors}
    assert fields == {("llsPassword", "format"), ("ek", "format"), ("ak", "format")}
    assert "has space" not in str(bad.value) and "00112233" not in str(bad.value)
    with pytest.raises(ValidationFailed) as unpaired:
        MeterKeys.parse(None, "00" * 16, None)
    assert [(e.field, e.rule) for e in unpaired.value.errors] == [("ak", "pair")]
    with pytest.raises(ValidationFailed) as empty:
        MeterKeys.parse(None, None, None)
    assert [(e.field, e.rule) for e in empty.value.errors] == [("keys", "required")]
    keys = MeterKeys.parse("12345678", "00" * 16, "11" * 16)
    assert keys.kinds == [KeyKind.LLS, KeyKind.EK, KeyKind.AK]
    assert "12345678" not in repr(keys) and "0000" not in repr(keys)
    merged = MeterKeys(lls_password=b"new").merged_over(keys)
    assert merged.as_dict() == {
        KeyKind.LLS: b"new",
        KeyKind.EK: b"\0" * 16,
        KeyKind.AK: b"\x11" * 16,
    }
