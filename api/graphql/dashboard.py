"""GraphQL ``dashboard``: the operations overview as one value, queried or streamed live."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Annotated

import strawberry
from graphql import GraphQLError
from nats.aio.msg import Msg
from strawberry.types import Info

from adapters.nats.subjects import event_subject
from api.context import RequestContext
from api.graphql.tariffs import Tariff
from commands.context import Actor, Role
from domain import alert as domain
from projections.dashboard_queries import DashboardSnapshot, MeterCounts, RegionLoad
from projections.tariffs_queries import TariffRow

ContextInfo = Info[RequestContext, None]
_STAFF = frozenset({Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.AUDITOR})
EVENT_SETTLE_S = 0.3
"""After an alert or tariff event, wait this long for its read model before the next snapshot."""


def _staff(actor: Actor) -> None:
    if actor.roles.isdisjoint(_STAFF):
        raise GraphQLError(
            "the dashboard needs role viewer, operator, admin or auditor",
            extensions={"code": "FORBIDDEN"},
        )


@strawberry.type(description="Meters by reachability; online = a reading in the last 15 minutes.")
class FleetReach:
    active: int = strawberry.field(description="Meters not decommissioned.")
    online: int
    offline: int = strawberry.field(description="Reported before, not in the last 15 minutes.")
    never_seen: int = strawberry.field(description="Active meters that never reported.")
    decommissioned: int

    @classmethod
    def of(cls, counts: MeterCounts) -> FleetReach:
        """GraphQL view of the counts."""
        return cls(
            active=counts.active,
            online=counts.online,
            offline=counts.offline,
            never_seen=counts.never_seen,
            decommissioned=counts.decommissioned,
        )


@strawberry.type(description="Readings stored per 15-minute window (by reading timestamp).")
class ReadingWindows:
    window_start: datetime = strawberry.field(description="Start of the current window.")
    this_window: int = strawberry.field(description="Readings in the current window so far.")
    last_window: int = strawberry.field(description="Readings in the previous, complete window.")


@strawberry.type(description="Unresolved alerts of one severity.")
class AlertTally:
    severity: domain.Severity
    open: int
    acknowledged: int


@strawberry.type(description="A region: its meters, newest 15-minute load and tariff.")
class RegionOverview:
    region: str
    meters: FleetReach
    capacity_kw: float
    load_bucket: datetime | None = strawberry.field(
        description="Window of the newest load (null: no load in the last 30 minutes)."
    )
    power_kw: float | None
    load_pct: float | None
    tariff: Tariff | None = strawberry.field(description="The region's tariff, if it has one.")


@strawberry.type(description="The operations overview at one moment.")
class Dashboard:
    at: datetime
    meters: FleetReach
    readings: ReadingWindows
    open_alerts: list[AlertTally] = strawberry.field(
        description="Every severity, critical first (zero when none)."
    )
    regions: list[RegionOverview]


def _region(load: RegionLoad, tariffs: dict[str, TariffRow]) -> RegionOverview:
    tariff = tariffs.get(load.region.strip().upper())
    return RegionOverview(
        region=load.region,
        meters=FleetReach.of(load.meters),
        capacity_kw=load.capacity_w / 1000,
        load_bucket=load.bucket,
        power_kw=None if load.power_w is None else load.power_w / 1000,
        load_pct=load.load_pct,
        tariff=None if tariff is None else Tariff.from_row(tariff),
    )


async def _dashboard(info: ContextInfo, *, built_after: float | None = None) -> Dashboard:
    container = info.context.container
    snap: DashboardSnapshot = await container.dashboard.snapshot(
        datetime.now(UTC), built_after=built_after
    )
    tariffs = {row.region.strip().upper(): row for row in await container.tariff_queries.all()}
    return Dashboard(
        at=snap.at,
        meters=FleetReach.of(snap.meters),
        readings=ReadingWindows(
            window_start=snap.window_start,
            this_window=snap.readings_this_window,
            last_window=snap.readings_last_window,
        ),
        open_alerts=[
            AlertTally(severity=a.severity, open=a.open, acknowledged=a.acknowledged)
            for a in snap.alerts
        ],
        regions=[_region(r, tariffs) for r in snap.regions],
    )


@strawberry.type
class DashboardQuery:
    @strawberry.field(description="The operations overview now (staff).")
    async def dashboard(self, info: ContextInfo) -> Dashboard:
        _staff(info.context.actor())
        return await _dashboard(info)


@strawberry.type
class DashboardSubscription:
    @strawberry.subscription(
        description="The operations overview at once, then every `everySeconds` and right after "
        "every alert or tariff event (staff)."
    )
    async def dashboard(
        self,
        info: ContextInfo,
        every_seconds: Annotated[
            int, strawberry.argument(description="Seconds between snapshots (2..300).")
        ] = 5,
    ) -> AsyncGenerator[Dashboard, None]:
        _staff(info.context.actor())
        if not 2 <= every_seconds <= 300:
            raise GraphQLError(
                f"everySeconds: must be between 2 and 300, got {every_seconds}",
                extensions={"code": "BAD_USER_INPUT"},
            )
        container = info.context.container
        changed = asyncio.Event()

        async def wake(_: Msg) -> None:
            changed.set()

        subs = []
        if container.nats is not None:
            prefix = container.settings.nats.prefix
            for aggregate in ("alert", "tariff"):
                subs.append(
                    await container.nats.subscribe(event_subject(prefix, aggregate, "*"), cb=wake)
                )
        try:
            after: float | None = None
            while True:
                yield await _dashboard(info, built_after=after)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), every_seconds)
                after = None
                if changed.is_set():
                    # subscribers woken by the same event share the snapshot made after it
                    await asyncio.sleep(EVENT_SETTLE_S)
                    after = time.monotonic() - EVENT_SETTLE_S / 2
                    changed.clear()
        finally:
            for sub in subs:
                await sub.unsubscribe()
