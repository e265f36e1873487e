"""The campaign runner: starts campaigns' meters within their limits and records outcomes.

It keeps no state of its own. Each round it reads the open campaigns from the ``campaigns``
read model, loads each ``Campaign`` aggregate (the arbiter), looks up its running meters'
commands in the ``remote_commands`` read model, records their outcomes, and starts the
meters the limits allow: first ``MeterStarted`` on the campaign (a lost race skips the
meter), then the meter's command with the campaign's id for it (requesting an existing one
again changes nothing). A runner that died between the two steps finds the meter RUNNING
with no command on its next round and asks again; the command executor does the DLMS work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from commands.context import Actor, CommandContext, Role
from commands.fleet import FleetOperations
from commands.meters import MeterRegistry
from domain.campaign import IN_FLIGHT, Campaign, MeterState, campaign_command_id
from domain.errors import Conflict, DomainError, NotFound
from domain.meta import EventMeta
from domain.remote_commands import CommandStatus, FirmwareStep

log = logging.getLogger(__name__)

RUNNER = Actor(subject="campaign-runner", roles=frozenset({Role.ADMIN}))


class CampaignRunner:
    """Drives every open campaign one round at a time."""

    def __init__(
        self,
        fleet: FleetOperations,
        registry: MeterRegistry,
        pool: AsyncConnectionPool[Any],
        schema: str,
        *,
        poll_seconds: float = 1.0,
    ) -> None:
        self.fleet = fleet
        self.registry = registry
        self.pool = pool
        self.schema = sql.Identifier(schema)
        self.poll = poll_seconds

    async def run(self, stop: asyncio.Event) -> None:
        """Run rounds until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("campaign runner round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll)

    async def run_once(self) -> int:
        """One round over every open campaign; return how many meters it started."""
        query = sql.SQL(
            "SELECT id FROM {}.campaigns WHERE status IN ('RUNNING', 'PAUSED', 'CANCELLED') "
            "AND (status <> 'CANCELLED' OR running > 0) ORDER BY started_at"
        ).format(self.schema)
        async with self.pool.connection() as conn:
            ids = [row[0] for row in await (await conn.execute(query)).fetchall()]
        started = 0
        for campaign_id in ids:
            try:
                started += await self.step(campaign_id)
            except DomainError as exc:
                log.info("campaign %s: %s", campaign_id, exc.message)
        return started

    async def step(self, campaign_id: UUID) -> int:
        """Record the outcomes of the campaign's running meters, then start what fits."""
        campaign = await asyncio.to_thread(self.fleet.campaign, campaign_id)
        running = {serial: p for serial, p in campaign.meters.items() if p.state in IN_FLIGHT}
        if running:
            await self._settle(campaign, running)
            campaign = await asyncio.to_thread(self.fleet.campaign, campaign_id)
        chosen = campaign.next_to_start()
        if not chosen:
            return 0

        def start(c: Campaign, meta: EventMeta) -> None:
            for serial in chosen:
                c.start_meter(serial, meta)

        try:
            outcome = await asyncio.to_thread(
                self.fleet.record_campaign, campaign_id, start, self._ctx()
            )
        except Conflict as exc:
            log.info("campaign %s: not starting now: %s", campaign_id, exc.message)
            return 0
        campaign = outcome.aggregate  # type: ignore[assignment]
        for serial in chosen:
            await self._ask(campaign, serial)
        return len(chosen)

    async def _settle(self, campaign: Campaign, running: dict[str, Any]) -> None:
        ids = {campaign_command_id(campaign.id, serial): serial for serial in running}
        query = sql.SQL(
            "SELECT command_id, status, attempt, reason, firmware_step FROM {}.remote_commands "
            "WHERE command_id = ANY(%s)"
        ).format(self.schema)
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(query, (list(ids),))).fetchall()
        seen = {row[0]: row for row in rows}
        succeeded: list[str] = []
        failed: list[tuple[str, str]] = []
        scheduled: list[str] = []
        for command_id, serial in ids.items():
            progress = running[serial]
            row = seen.get(command_id)
            if row is None or row[2] < progress.attempts:
                if progress.state is MeterState.RUNNING:
                    await self._ask(campaign, serial)  # not requested yet (or not retried)
            elif row[1] == CommandStatus.CONFIRMED:
                succeeded.append(serial)
            elif row[1] == CommandStatus.FAILED:
                failed.append((serial, row[3] or "failed"))
            elif (
                row[4] == FirmwareStep.ACTIVATION_SCHEDULED and progress.state is MeterState.RUNNING
            ):
                scheduled.append(serial)
        if not succeeded and not failed and not scheduled:
            return

        def record(c: Campaign, meta: EventMeta) -> None:
            for serial in scheduled:
                if c.meters[serial].state is MeterState.RUNNING:
                    c.meter_awaiting_activation(serial, meta)
            for serial in succeeded:
                if c.meters[serial].state in IN_FLIGHT:
                    c.meter_succeeded(serial, meta)
            for serial, reason in failed:
                if c.meters[serial].state in IN_FLIGHT:
                    c.meter_failed(serial, reason, meta)

        await asyncio.to_thread(self.fleet.record_campaign, campaign.id, record, self._ctx())

    async def _ask(self, campaign: Campaign, serial: str) -> None:
        """Make sure the meter has the campaign's command at the campaign's attempt."""
        progress = campaign.meters[serial]
        member = progress.member
        try:
            await asyncio.to_thread(
                self.registry.request_campaign_command,
                member.meter_id,
                campaign_command_id(campaign.id, serial),
                campaign.spec.kind.command,
                campaign.spec.args(),
                self._ctx(),
                attempt=progress.attempts,
            )
        except (NotFound, Conflict, DomainError) as exc:
            # The meter cannot take the command (decommissioned, gone, refused): leave it.
            reason = f"meter {serial} cannot run {campaign.spec.kind.command}: {exc.message}"

            def skip(c: Campaign, meta: EventMeta) -> None:
                if c.meters[serial].state not in (MeterState.SUCCEEDED, MeterState.FAILED):
                    c.skip_meter(serial, reason, meta)

            await asyncio.to_thread(self.fleet.record_campaign, campaign.id, skip, self._ctx())

    @staticmethod
    def _ctx() -> CommandContext:
        return CommandContext(actor=RUNNER)
