"""Test doubles of the DLMS side for fleet operations: sessions and a ``FleetDevice``.

Only the meter end is replaced (no TCP, no DLMS): the head-end side — aggregates, executor,
``MeterAccess`` locks, campaign runner, projections — runs for real on PostgreSQL. The
double keeps each meter's state (blocks on the meter, firmware, calendar, limit) across
sessions, so a transfer resumed after a failure sends only the missing blocks.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from adapters.dlms.fleet_device import OnBlock
from adapters.dlms.session import Credentials, MeterTarget, SessionError
from domain.load_limit import LoadLimit
from domain.tou_calendar import TouCalendar

BLOCK = 100


class FakeSession:
    """An 'association' that only knows which meter it is with."""

    server_system_title = None

    def __init__(self, target: MeterTarget) -> None:
        self.target = target

    async def close(self) -> None:
        """Nothing to release."""


class FakeFactory:
    """Opens ``FakeSession``s (``SessionFactory``)."""

    async def open(self, target: MeterTarget, credentials: Credentials) -> FakeSession:
        """A session with ``target``."""
        return FakeSession(target)


class TransferFailed(SessionError):
    """Shaped like ``image_transfer.ImageTransferFailed``: the step and the meter's result."""

    def __init__(self, message: str, step: str, result: int | None) -> None:
        super().__init__(message)
        self.step = step
        self.result = result


class Dropped(SessionError):
    """The connection dropped: ``MeterAccess`` opens a new session and runs the job again."""

    retryable = True


@dataclass
class Outcome:
    """``TransferOutcome``'s fields."""

    blocks_total: int
    blocks_sent: int
    blocks_already_on_meter: int
    block_size: int = BLOCK


@dataclass
class FakeMeter:
    """What one meter holds."""

    firmware: str = "1.0"
    blocks: set[int] = field(default_factory=set)
    image: str | None = None
    passive: TouCalendar | None = None
    limit: LoadLimit | None = None
    activation_at: datetime | None = None


class FakeDevice:
    """A ``FleetDevice`` over ``FakeMeter``s, with injectable failures and a watch on overlap."""

    def __init__(self, *, hold: float = 0.0) -> None:
        self.meters: dict[str, FakeMeter] = {}
        self.hold = hold
        """Seconds each write holds the association (so that overlaps can be seen)."""
        self.fail_writes: Counter[str] = Counter()
        """Serial → how many more writes fail (non-retryable)."""
        self.drop_at_block: dict[str, int] = {}
        """Serial → the block at which the connection drops once."""
        self.refuse_verify: dict[str, int] = {}
        """Serial → the result code the meter answers the verify with."""
        self.calendar_twist: set[str] = set()
        """Serials whose calendar reads back with another name."""
        self.active: Counter[str] = Counter()
        self.cells: dict[str, str] = {}
        """Serial → cell (to watch the per-cell overlap)."""
        self.max_active = 0
        self.max_per_cell = 0
        self.blocks_sent: Counter[str] = Counter()

    def meter(self, session: object) -> tuple[str, FakeMeter]:
        """The serial and state of the session's meter."""
        assert isinstance(session, FakeSession)
        serial = session.target.serial
        return serial, self.meters.setdefault(serial, FakeMeter())

    async def _busy(self, serial: str) -> None:
        # Only the test's own meters are watched: the executor also runs commands that other
        # tests left requested in the shared schema, and those are no campaign's concern.
        cell = self.cells.get(serial)
        if cell is None:
            await asyncio.sleep(self.hold)
        else:
            self.active[cell] += 1
            self.max_active = max(self.max_active, sum(self.active.values()))
            self.max_per_cell = max(self.max_per_cell, self.active[cell])
            try:
                await asyncio.sleep(self.hold)
            finally:
                self.active[cell] -= 1
        if self.fail_writes[serial] > 0:
            self.fail_writes[serial] -= 1
            raise SessionError(f"meter {serial}: write refused (injected)")

    async def transfer_image(
        self, session: object, identifier: str, image: bytes, *, on_block: OnBlock | None
    ) -> Outcome:
        """Send the blocks the meter does not hold; drop once where asked."""
        serial, meter = self.meter(session)
        await self._busy(serial)
        if meter.image != identifier:
            meter.image, meter.blocks = identifier, set()
        total = -(-len(image) // BLOCK)
        already = len(meter.blocks)
        sent = 0
        for n in range(total):
            if n in meter.blocks:
                continue
            if self.drop_at_block.get(serial) == n:
                del self.drop_at_block[serial]
                raise Dropped(f"meter {serial}: connection dropped at block {n}")
            meter.blocks.add(n)
            sent += 1
            self.blocks_sent[serial] += 1
            if on_block is not None:
                await on_block(len(meter.blocks), total)
        return Outcome(blocks_total=total, blocks_sent=sent, blocks_already_on_meter=already)

    async def verify_image(self, session: object) -> None:
        """Verify, or answer the injected result code."""
        serial, _ = self.meter(session)
        if serial in self.refuse_verify:
            code = self.refuse_verify[serial]
            raise TransferFailed(f"meter {serial}: verify answered {code}", "verify", code)

    async def activate_image(self, session: object) -> None:
        """Run the transferred image."""
        _, meter = self.meter(session)
        assert meter.image is not None
        meter.firmware = meter.image

    async def schedule_activation(self, session: object, at: datetime) -> None:
        """Remember when to activate (the meter does it by itself)."""
        self.meter(session)[1].activation_at = at

    async def active_firmware(self, session: object) -> str:
        """The running firmware (a scheduled activation that is due happens first)."""
        meter = self.meter(session)[1]
        if meter.activation_at is not None and meter.activation_at <= datetime.now(UTC):
            assert meter.image is not None
            meter.firmware, meter.activation_at = meter.image, None
        return meter.firmware

    async def write_calendar(self, session: object, calendar: TouCalendar) -> None:
        """Store the passive calendar."""
        serial, meter = self.meter(session)
        await self._busy(serial)
        meter.passive = calendar

    async def read_calendar(self, session: object) -> TouCalendar:
        """The passive calendar (renamed for meters that twist it)."""
        serial, meter = self.meter(session)
        assert meter.passive is not None
        if serial in self.calendar_twist:
            return TouCalendar(
                name="TWISTED",
                seasons=meter.passive.seasons,
                weeks=meter.passive.weeks,
                days=meter.passive.days,
                special_days=meter.passive.special_days,
                activate_at=meter.passive.activate_at,
            )
        return meter.passive

    async def write_load_limit(self, session: object, limit: LoadLimit) -> None:
        """Store the limit."""
        serial, meter = self.meter(session)
        await self._busy(serial)
        meter.limit = limit

    async def read_load_limit(self, session: object) -> LoadLimit:
        """The stored limit."""
        limit = self.meter(session)[1].limit
        assert limit is not None
        return limit

    def expected_calendar(self, calendar: TouCalendar) -> TouCalendar:
        """The double keeps calendars as written."""
        return calendar

    def expected_load_limit(self, limit: LoadLimit) -> LoadLimit:
        """The double keeps limits as written."""
        return limit
