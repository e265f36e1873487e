"""The meter operations fleet commands need (image transfer, calendar, limiter), as one port.

The executor calls them through ``FleetDevice`` so that tests can hand in another
implementation; ``DlmsFleetDevice`` is the real one over the DLMS modules
``image_transfer``, ``activity_calendar`` and ``load_limiter``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from adapters.dlms import activity_calendar, image_transfer, load_limiter
from adapters.dlms.session import MeterSession, SessionError
from domain.load_limit import LoadLimit
from domain.tou_calendar import TouCalendar

OnBlock = Callable[[int, int], Awaitable[None]]


class TransferReport(Protocol):
    """What an image transfer did (``image_transfer.TransferOutcome``)."""

    @property
    def blocks_total(self) -> int:
        """Blocks in the image."""
        ...

    @property
    def blocks_sent(self) -> int:
        """Blocks sent in this call."""
        ...

    @property
    def blocks_already_on_meter(self) -> int:
        """Blocks the meter had before this call (a resumed transfer)."""
        ...

    @property
    def block_size(self) -> int:
        """The meter's block size in bytes."""
        ...


class FleetDevice(Protocol):
    """Fleet operations on one meter, inside an association the caller holds."""

    async def transfer_image(
        self, session: MeterSession, identifier: str, image: bytes, *, on_block: OnBlock | None
    ) -> TransferReport:
        """Transfer the image's missing blocks (a resumed transfer sends only those)."""
        ...

    async def verify_image(self, session: MeterSession) -> None:
        """Ask the meter to verify the transferred image."""
        ...

    async def activate_image(self, session: MeterSession) -> None:
        """Ask the meter to activate the verified image."""
        ...

    async def schedule_activation(self, session: MeterSession, at: datetime) -> None:
        """Have the meter activate the verified image by itself at ``at``."""
        ...

    async def active_firmware(self, session: MeterSession) -> str:
        """The identifier of the firmware the meter runs."""
        ...

    async def write_calendar(self, session: MeterSession, calendar: TouCalendar) -> None:
        """Write the calendar into the passive activity calendar and special days table."""
        ...

    async def read_calendar(self, session: MeterSession) -> TouCalendar:
        """Read the passive calendar back."""
        ...

    async def write_load_limit(self, session: MeterSession, limit: LoadLimit) -> None:
        """Write the limiter's thresholds."""
        ...

    async def read_load_limit(self, session: MeterSession) -> LoadLimit:
        """Read the limiter's thresholds back."""
        ...

    def expected_calendar(self, calendar: TouCalendar) -> TouCalendar:
        """``calendar`` as a meter keeps it (what an equal read-back looks like)."""
        ...

    def expected_load_limit(self, limit: LoadLimit) -> LoadLimit:
        """``limit`` as a meter keeps it (what an equal read-back looks like)."""
        ...


def failed_step(exc: SessionError) -> tuple[str | None, int | None]:
    """The step and the meter's result code an image-transfer failure names (else None)."""
    step = getattr(exc, "step", None)
    result = getattr(exc, "result", None)
    return (
        step if isinstance(step, str) else None,
        result if isinstance(result, int) and not isinstance(result, bool) else None,
    )


class DlmsFleetDevice:
    """``FleetDevice`` over our DLMS client's class 18, 20/11 and 71 functions."""

    async def transfer_image(
        self, session: MeterSession, identifier: str, image: bytes, *, on_block: OnBlock | None
    ) -> TransferReport:
        """Transfer the image's missing blocks (a resumed transfer sends only those)."""
        return await image_transfer.transfer_image(session, identifier, image, on_block=on_block)

    async def verify_image(self, session: MeterSession) -> None:
        """Ask the meter to verify the transferred image."""
        await image_transfer.verify_image(session)

    async def activate_image(self, session: MeterSession) -> None:
        """Ask the meter to activate the verified image."""
        await image_transfer.activate_image(session)

    async def schedule_activation(self, session: MeterSession, at: datetime) -> None:
        """Write the image activation schedule (class 22, 0.0.15.0.2.255) for ``at``."""
        await image_transfer.schedule_activation(session, at)

    async def active_firmware(self, session: MeterSession) -> str:
        """The identifier of the firmware the meter runs."""
        return await image_transfer.active_firmware(session)

    async def write_calendar(self, session: MeterSession, calendar: TouCalendar) -> None:
        """Write the calendar into the passive activity calendar and special days table."""
        await activity_calendar.write_calendar(session, calendar)

    async def read_calendar(self, session: MeterSession) -> TouCalendar:
        """Read the passive calendar back."""
        return await activity_calendar.read_calendar(session, passive=True)

    async def write_load_limit(self, session: MeterSession, limit: LoadLimit) -> None:
        """Write the limiter's thresholds."""
        await load_limiter.write_load_limit(session, limit)

    async def read_load_limit(self, session: MeterSession) -> LoadLimit:
        """Read the limiter's thresholds back."""
        return await load_limiter.read_load_limit(session)

    def expected_calendar(self, calendar: TouCalendar) -> TouCalendar:
        """``calendar`` as a meter keeps it (season year, special days by index, hundredths)."""
        return activity_calendar.as_meter_keeps(calendar)

    def expected_load_limit(self, limit: LoadLimit) -> LoadLimit:
        """``limit`` as a meter keeps it (whole watts, hundredths of a second)."""
        return load_limiter.as_meter_keeps(limit)
