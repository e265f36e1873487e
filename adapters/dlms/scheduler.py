"""The collection scheduler: leases due tasks from PostgreSQL, runs each meter's due tasks in
one session, and sets when each runs next (its group's schedule, or a backoff after failure).

Leases make it safe to run several schedulers: a task is claimed by one of them at a time, and
a scheduler that dies leaves its leases to expire and be claimed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from datetime import UTC, datetime
from uuid import UUID

from adapters.dlms.collection_store import ClaimedTask, CollectionStore
from adapters.dlms.collector import Collector, TaskOutcome
from adapters.dlms.session import SessionError
from domain.collection import Schedules, Task, next_due, retry_due

log = logging.getLogger(__name__)

LEASE_SECONDS = 300.0
SYNC_INTERVAL = 30.0
IDLE_WAIT = 1.0
STOP_GRACE = 5.0
"""How long running collections may finish after a stop before they are cancelled."""


class CollectionScheduler:
    """Keeps every active meter's tasks running on schedule."""

    def __init__(
        self,
        collector: Collector,
        store: CollectionStore,
        schedules: Schedules,
        *,
        max_meters_in_flight: int,
    ) -> None:
        self.collector = collector
        self.store = store
        self.schedules = schedules
        self.max_in_flight = max_meters_in_flight
        self._running: set[asyncio.Task[None]] = set()
        self.completed = 0
        """Meter collections finished (successfully or not) since start."""

    async def run(self, stop: asyncio.Event) -> None:
        """Schedule until ``stop`` is set, then let running collections finish (5 s at most)."""
        last_sync = float("-inf")
        try:
            while not stop.is_set():
                try:
                    if time.monotonic() - last_sync >= SYNC_INTERVAL:
                        await self.store.sync_tasks()
                        last_sync = time.monotonic()
                    started = await self.start_due()
                except Exception:
                    log.exception("collection scheduler round failed")
                    started = 0
                if started == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), IDLE_WAIT)
                else:
                    await asyncio.sleep(0)
        finally:
            if self._running:
                await asyncio.wait(self._running, timeout=STOP_GRACE)
                for task in self._running:
                    task.cancel()

    async def start_due(self) -> int:
        """Claim due tasks and start their meters' collections; return how many meters."""
        room = self.max_in_flight - len(self._running)
        if room <= 0:
            return 0
        claimed = await self.store.claim(room * len(Task), LEASE_SECONDS)
        by_meter: dict[UUID, list[ClaimedTask]] = defaultdict(list)
        for item in claimed:
            by_meter[item.meter].append(item)
        for meter, items in by_meter.items():
            task = asyncio.create_task(self._collect(meter, items), name=f"collect-{meter}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return len(by_meter)

    async def run_once(self) -> int:
        """Sync tasks, run everything due now and wait for it; return meters collected."""
        await self.store.sync_tasks()
        total = 0
        while started := await self.start_due():
            total += started
            await asyncio.wait(set(self._running))
        if self._running:
            await asyncio.wait(set(self._running))
        return total

    async def _collect(self, meter: UUID, items: list[ClaimedTask]) -> None:
        tasks = {item.task for item in items}
        outcome: dict[Task, TaskOutcome]
        targets = await self.store.targets([meter])
        target = targets.get(meter)
        if target is None or target.status != "COMMISSIONED" or not target.connection.dialled:
            # Its tasks go at the next sync; until then they wait like failed ones.
            why = "meter is not collected (not commissioned, or transport NONE)"
            outcome = {t: TaskOutcome(why) for t in tasks}
            group = ""
        else:
            group = target.area
            try:
                outcome = await self.collector.collect(target, tasks)
            except SessionError as exc:
                outcome = {t: TaskOutcome(exc.message) for t in tasks}
                log.info("collection from %s failed: %s", target.serial, exc.message)
            except Exception as exc:
                log.exception("collection from %s failed unexpectedly", target.serial)
                message = (
                    f"meter {target.serial}: internal error in the head-end during collection "
                    f"({type(exc).__name__}: {exc}); see the server log"
                )
                outcome = {t: TaskOutcome(message) for t in tasks}
        now = datetime.now(UTC)
        for item in items:
            every = self.schedules.every(group, item.task)
            result = outcome.get(item.task, TaskOutcome("not run"))
            due = (
                next_due(meter, every, now)
                if result.ok or result.denied
                else retry_due(item.failures + 1, every, now)
            )
            await self.store.finish(
                meter,
                item.task,
                result.ok,
                due,
                now,
                status=result.status,
                problems=result.problems,
                error=result.error,
            )
        self.completed += 1
