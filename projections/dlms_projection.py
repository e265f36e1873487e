"""Projects the Meter's DLMS events: remote commands, relay state, key versions, log events,
DLMS profile assignments and invocation-counter resynchronisations."""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from domain.meter import Meter
from domain.remote_commands import RELAY_KINDS
from projections import dlms_view as v
from projections.dlms_view import DlmsView, as_json


class DlmsProjection(Projection[DlmsView]):
    """Keeps remote commands (the executor's queue), relay/key state and the meters' log events."""

    name = "dlms_view"
    topics = tuple(
        get_topic(cls)
        for cls in (
            Meter.RemoteCommandRequested,
            Meter.RemoteCommandSent,
            Meter.RemoteCommandConfirmed,
            Meter.RemoteCommandFailed,
            Meter.RemoteCommandRetried,
            Meter.FirmwareUpdateStepped,
            Meter.MeterEventLogged,
            Meter.SecurityKeysChanged,
            Meter.DlmsProfileAssigned,
            Meter.InvocationCounterResynchronised,
        )
    )

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Ignore events this view does not show, but record that they were seen."""
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, e: Meter.RemoteCommandRequested, tracking: Tracking) -> None:
        self.view.apply(
            tracking,
            [
                (
                    v.INSERT_COMMAND,
                    {
                        "command_id": e.command_id,
                        "meter_id": e.originator_id,
                        "kind": e.kind.value,
                        "args": as_json(e.args),
                        "requested_by": e.meta.actor,
                        "at": e.timestamp,
                        "version": e.originator_version,
                    },
                )
            ],
        )

    @process_event.register
    def _(self, e: Meter.RemoteCommandSent, tracking: Tracking) -> None:
        self.view.apply(tracking, [(v.COMMAND_SENT, _params(e, attempt=e.attempt))])

    @process_event.register
    def _(self, e: Meter.RemoteCommandConfirmed, tracking: Tracking) -> None:
        statements = [(v.COMMAND_CONFIRMED, _params(e, result=as_json(e.result)))]
        if e.result.relay_connected is not None:
            relay = {
                "meter_id": e.originator_id,
                "command_id": e.command_id,
                "kinds": [k.value for k in RELAY_KINDS],
                "relay_connected": e.result.relay_connected,
                "at": e.timestamp,
            }
            statements.append((v.RELAY_STATE, relay))
        self.view.apply(tracking, statements)

    @process_event.register
    def _(self, e: Meter.RemoteCommandFailed, tracking: Tracking) -> None:
        self.view.apply(
            tracking, [(v.COMMAND_FAILED, _params(e, reason=e.reason, attempt=e.attempt))]
        )

    @process_event.register
    def _(self, e: Meter.RemoteCommandRetried, tracking: Tracking) -> None:
        self.view.apply(tracking, [(v.COMMAND_RETRIED, _params(e, attempt=e.attempt))])

    @process_event.register
    def _(self, e: Meter.FirmwareUpdateStepped, tracking: Tracking) -> None:
        self.view.apply(tracking, [(v.FIRMWARE_STEP, _params(e, step=e.step.value))])

    @process_event.register
    def _(self, e: Meter.MeterEventLogged, tracking: Tracking) -> None:
        self.view.apply(
            tracking,
            [
                (
                    v.EVENT_LOGGED,
                    {
                        "meter_id": e.originator_id,
                        "log": e.log,
                        "event_at": e.at,
                        "code": e.code,
                        "kind": e.kind.value,
                        "at": e.timestamp,
                    },
                )
            ],
        )

    @process_event.register
    def _(self, e: Meter.SecurityKeysChanged, tracking: Tracking) -> None:
        self.view.apply(
            tracking,
            [
                (
                    v.KEYS_CHANGED,
                    {"meter_id": e.originator_id, "key_version": e.key_version, "at": e.timestamp},
                )
            ],
        )

    @process_event.register
    def _(self, e: Meter.DlmsProfileAssigned, tracking: Tracking) -> None:
        params = {"meter_id": e.originator_id, "profile": e.profile, "at": e.timestamp}
        self.view.apply(tracking, [(v.PROFILE_ASSIGNED, params)])

    @process_event.register
    def _(self, e: Meter.InvocationCounterResynchronised, tracking: Tracking) -> None:
        params = {"meter_id": e.originator_id, "strategy": e.strategy, "at": e.timestamp}
        self.view.apply(tracking, [(v.COUNTER_RESYNCED, params)])


def _params(e: Any, **extra: Any) -> dict[str, Any]:
    return {
        "command_id": e.command_id,
        "at": e.timestamp,
        "version": e.originator_version,
        **extra,
    }
