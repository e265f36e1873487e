"""Projects the fleet application's events: images, TOU plan versions, campaigns' progress."""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

import msgspec
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from domain.campaign import Campaign, CampaignStatus, MeterState
from domain.firmware import FirmwareImage
from domain.tou_plan import TouPlan
from projections import fleet_view as v
from projections.fleet_view import FleetView

_json = msgspec.json.Encoder()


def _as_json(value: object) -> str:
    return _json.encode(value).decode()


class FleetProjection(Projection[FleetView]):
    """Keeps images, TOU plans and campaigns (with per-meter states and counts) current."""

    name = "fleet_view"
    topics = tuple(
        get_topic(cls)
        for cls in (
            FirmwareImage.Uploaded,
            FirmwareImage.Deleted,
            TouPlan.Created,
            TouPlan.Revised,
            Campaign.Started,
            Campaign.Paused,
            Campaign.Resumed,
            Campaign.Cancelled,
            Campaign.Completed,
            Campaign.MeterStarted,
            Campaign.MeterAwaitingActivation,
            Campaign.MeterSucceeded,
            Campaign.MeterFailed,
            Campaign.MeterSkipped,
        )
    )

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Ignore events this view does not show, but record that they were seen."""
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, e: FirmwareImage.Uploaded, tracking: Tracking) -> None:
        params = {
            "id": e.originator_id,
            "identifier": e.spec.identifier,
            "manufacturer": e.spec.manufacturer,
            "model": e.spec.model,
            "sha256": e.spec.sha256,
            "size": e.spec.size,
            "actor": e.meta.actor,
            "at": e.timestamp,
            "version": e.originator_version,
        }
        self.view.apply(tracking, [(v.IMAGE_UPLOADED, params)])

    @process_event.register
    def _(self, e: FirmwareImage.Deleted, tracking: Tracking) -> None:
        params = {"id": e.originator_id, "at": e.timestamp, "version": e.originator_version}
        self.view.apply(tracking, [(v.IMAGE_DELETED, params)])

    @process_event.register
    def _(self, e: TouPlan.Created, tracking: Tracking) -> None:
        self._plan(e, tracking, e.tariff_plan, 1)

    @process_event.register
    def _(self, e: TouPlan.Revised, tracking: Tracking) -> None:
        self._plan(e, tracking, None, e.number)

    def _plan(self, e: Any, tracking: Tracking, tariff_plan: str | None, number: int) -> None:
        params = {
            "id": e.originator_id,
            "tariff_plan": tariff_plan,
            "number": number,
            "calendar": _as_json(e.calendar),
            "actor": e.meta.actor,
            "at": e.timestamp,
        }
        self.view.apply(tracking, [(v.PLAN_VERSION, params)])

    @process_event.register
    def _(self, e: Campaign.Started, tracking: Tracking) -> None:
        skipped = {s.serial: s.reason for s in e.skipped}
        members = [
            {
                "serial": m.serial,
                "meter_id": str(m.meter_id),
                "cell": m.cell,
                "state": (MeterState.SKIPPED if m.serial in skipped else MeterState.PENDING).value,
                "reason": skipped.get(m.serial),
            }
            for m in e.cohort
        ]
        base = {"id": e.originator_id, "at": e.timestamp, "version": e.originator_version}
        started = base | {
            "name": e.spec.name,
            "kind": e.spec.kind.value,
            "spec": _as_json(e.spec),
            "actor": e.meta.actor,
            "meters": len(members),
        }
        self.view.apply(
            tracking,
            [
                (v.CAMPAIGN_STARTED, started),
                (v.COHORT, base | {"members": _as_json(members)}),
                (v.COUNTS, base),
            ],
        )

    @process_event.register
    def _(self, e: Campaign.Paused, tracking: Tracking) -> None:
        self._status(e, tracking, CampaignStatus.PAUSED)

    @process_event.register
    def _(self, e: Campaign.Resumed, tracking: Tracking) -> None:
        self._status(e, tracking, CampaignStatus.RUNNING)

    @process_event.register
    def _(self, e: Campaign.Completed, tracking: Tracking) -> None:
        self._status(e, tracking, CampaignStatus.COMPLETED)

    @process_event.register
    def _(self, e: Campaign.Cancelled, tracking: Tracking) -> None:
        base = {"id": e.originator_id, "at": e.timestamp, "version": e.originator_version}
        self.view.apply(
            tracking,
            [
                (v.CAMPAIGN_STATUS, base | {"status": CampaignStatus.CANCELLED.value}),
                (v.CANCEL_PENDING, base | {"reason": f"campaign cancelled: {e.reason}"}),
                (v.COUNTS, base),
            ],
        )

    def _status(self, e: Any, tracking: Tracking, status: CampaignStatus) -> None:
        base = {"id": e.originator_id, "at": e.timestamp, "version": e.originator_version}
        self.view.apply(tracking, [(v.CAMPAIGN_STATUS, base | {"status": status.value})])

    @process_event.register
    def _(self, e: Campaign.MeterStarted, tracking: Tracking) -> None:
        self._meter(e, tracking, MeterState.RUNNING, None, e.attempt, e.command_id)

    @process_event.register
    def _(self, e: Campaign.MeterAwaitingActivation, tracking: Tracking) -> None:
        self._meter(e, tracking, MeterState.AWAITING_ACTIVATION, None)

    @process_event.register
    def _(self, e: Campaign.MeterSucceeded, tracking: Tracking) -> None:
        self._meter(e, tracking, MeterState.SUCCEEDED, None)

    @process_event.register
    def _(self, e: Campaign.MeterFailed, tracking: Tracking) -> None:
        state = MeterState.FAILED if e.final else MeterState.PENDING
        self._meter(e, tracking, state, e.reason)

    @process_event.register
    def _(self, e: Campaign.MeterSkipped, tracking: Tracking) -> None:
        self._meter(e, tracking, MeterState.SKIPPED, e.reason)

    def _meter(
        self,
        e: Any,
        tracking: Tracking,
        state: MeterState,
        reason: str | None,
        attempt: int | None = None,
        command_id: Any = None,
    ) -> None:
        base = {"id": e.originator_id, "at": e.timestamp, "version": e.originator_version}
        params = base | {
            "serial": e.serial,
            "state": state.value,
            "reason": reason,
            "attempt": attempt,
            "command_id": command_id,
        }
        self.view.apply(tracking, [(v.METER_STATE, params), (v.COUNTS, base)])
