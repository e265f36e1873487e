"""Firmware image transfer to a meter (COSEM image transfer, class 18, 0.0.44.0.0.255).

One association carries the whole transfer: the status is read once at the start, every
missing block then goes out with one ACTION each (no per-block re-reads). A transfer the
meter already holds for the same image (identifier and size) is resumed: only the blocks its
transferred-blocks status lacks are sent. A dropped connection surfaces as the session's
``LinkError`` (retryable: call ``transfer_image`` again in a new session and it resumes); a
refusal by the meter as ``ImageTransferFailed`` naming the step and the meter's result code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import msgspec

from adapters.dlms import axdr
from adapters.dlms.cosem import DATA, DataAccessResult, result_name
from adapters.dlms.session import (
    AttributeRef,
    CosemValue,
    DataAccessError,
    MeterSession,
    SessionError,
)

IMAGE_TRANSFER = 18
IMAGE_TRANSFER_OBIS = "0.0.44.0.0.255"
ACTIVE_FIRMWARE_OBIS = "1.0.0.2.0.255"
SINGLE_ACTION_SCHEDULE = 22
ACTIVATION_SCHEDULE_OBIS = "0.0.15.0.2.255"
EXECUTION_TIME = 4
BLOCK_SIZE, BLOCKS_STATUS, FIRST_MISSING, ENABLED, STATUS, TO_ACTIVATE = 2, 3, 4, 5, 6, 7
INITIATE, BLOCK_TRANSFER, VERIFY, ACTIVATE = 1, 2, 3, 4
INITIATED, VERIFYING, VERIFIED, VERIFY_FAILED = 1, 2, 3, 4
VERIFY_WAIT_S = 120.0
VERIFY_POLL_S = 0.5


class ImageTransferFailed(SessionError):
    """The meter refused a step of the image transfer (``result``: its code, if it gave one)."""

    def __init__(self, step: str, result: int | None, detail: str = "") -> None:
        code = f"{result_name(result)} ({result})" if result is not None else ""
        if detail and code:
            detail = f"{detail} [result {code}]"
        detail = detail or f"the meter answered {code}"
        super().__init__(f"image transfer failed at {step}: {detail}")
        self.step = step
        self.result = result
        self.retryable = result == DataAccessResult.TEMPORARY_FAILURE


class TransferOutcome(msgspec.Struct, frozen=True):
    """What one ``transfer_image`` call did."""

    blocks_total: int
    blocks_sent: int
    blocks_already_on_meter: int
    block_size: int


def _attr(attribute: int) -> AttributeRef:
    return AttributeRef(IMAGE_TRANSFER, IMAGE_TRANSFER_OBIS, attribute)


async def _step(step: str, call: Awaitable[object]) -> None:
    try:
        await call
    except DataAccessError as exc:
        raise ImageTransferFailed(step, exc.result, exc.message) from None


def _integer(value: CosemValue | SessionError, step: str) -> int:
    if isinstance(value, SessionError):
        raise ImageTransferFailed(step, getattr(value, "result", None), value.message)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ImageTransferFailed(step, None, f"the meter sent {type(value).__name__}")
    return value


def _same_image(info: CosemValue | SessionError, identifier: bytes, size: int) -> bool:
    """Whether image_to_activate_info names this image (identifier and size)."""
    if not isinstance(info, list):
        return False
    for entry in info:
        if isinstance(entry, list) and len(entry) >= 2:
            got_size, got_id = entry[0], entry[1]
            got = got_id.encode() if isinstance(got_id, str) else got_id
            if got_size == size and got == identifier:
                return True
    return False


def missing_blocks(
    bits: CosemValue | SessionError, first_missing: int | None, total: int
) -> list[int]:
    """Block numbers the meter lacks: from its bit-string, else from its first missing block."""
    if isinstance(bits, str) and bits and set(bits) <= {"0", "1"}:
        return [n for n in range(total) if n >= len(bits) or bits[n] != "1"]
    start = first_missing if first_missing is not None else 0
    return list(range(min(start, total), total))


async def transfer_image(
    session: MeterSession,
    identifier: str,
    image: bytes,
    *,
    on_block: Callable[[int, int], Awaitable[None]] | None = None,
) -> TransferOutcome:
    """Bring ``image`` onto the meter, resuming a transfer of the same image it already holds.

    ``on_block(done, total)`` runs after each block sent: ``done`` counts the blocks now on
    the meter (those it already had included).
    """
    if not image:
        raise ValueError("the image is empty")
    ident = identifier.encode("utf-8")
    size = len(image)
    state: list[CosemValue | SessionError] = list(
        await session.get_many([_attr(a) for a in (BLOCK_SIZE, ENABLED, STATUS)])
    )
    block_size = _integer(state[0], "read image_block_size")
    if block_size <= 0:
        raise ImageTransferFailed("read image_block_size", None, f"block size {block_size}")
    total = -(-size // block_size)
    if state[1] is not True:
        await _step("enable image transfer", session.set(_attr(ENABLED), axdr.boolean(True)))
    status = state[2] if isinstance(state[2], int) else 0
    # Which image the meter holds matters only once a transfer was initiated.
    info = (
        await session.get(_attr(TO_ACTIVATE))
        if status in (INITIATED, VERIFYING, VERIFIED)
        else None
    )
    if status in (INITIATED, VERIFYING, VERIFIED) and _same_image(info, ident, size):
        if status == INITIATED:
            bits, first = await session.get_many([_attr(BLOCKS_STATUS), _attr(FIRST_MISSING)])
            first_missing = (
                first if isinstance(first, int) and not isinstance(first, bool) else None
            )
            missing = missing_blocks(bits, first_missing, total)
        else:
            missing = []
    else:
        parameter = axdr.structure([axdr.octets(ident), axdr.u32(size)])
        await _step(
            "image_transfer_initiate",
            session.action(IMAGE_TRANSFER, IMAGE_TRANSFER_OBIS, INITIATE, parameter),
        )
        missing = list(range(total))
    already = total - len(missing)
    for sent, number in enumerate(missing, start=1):
        chunk = image[number * block_size : (number + 1) * block_size]
        parameter = axdr.structure([axdr.u32(number), axdr.octets(chunk)])
        await _step(
            f"image_block_transfer of block {number}",
            session.action(IMAGE_TRANSFER, IMAGE_TRANSFER_OBIS, BLOCK_TRANSFER, parameter),
        )
        if on_block is not None:
            await on_block(already + sent, total)
    return TransferOutcome(
        blocks_total=total,
        blocks_sent=len(missing),
        blocks_already_on_meter=already,
        block_size=block_size,
    )


async def verify_image(
    session: MeterSession, *, wait_s: float = VERIFY_WAIT_S, poll_s: float = VERIFY_POLL_S
) -> None:
    """Have the meter verify the transferred image; wait (at most ``wait_s``) for the verdict."""
    try:
        await session.action(IMAGE_TRANSFER, IMAGE_TRANSFER_OBIS, VERIFY, axdr.i8(0))
    except DataAccessError as exc:
        # Temporary failure: the meter verifies in the background; its status tells when done.
        if exc.result != DataAccessResult.TEMPORARY_FAILURE:
            raise ImageTransferFailed("image_verify", exc.result, exc.message) from None
    deadline = time.monotonic() + wait_s
    while True:
        status = _integer(await session.get(_attr(STATUS)), "read image_transfer_status")
        if status == VERIFIED:
            return
        if status == VERIFY_FAILED:
            raise ImageTransferFailed("image_verify", None, "the meter reports verification failed")
        if time.monotonic() >= deadline:
            raise ImageTransferFailed(
                "image_verify", None, f"no verdict within {wait_s:g} s (status {status})"
            )
        await asyncio.sleep(poll_s)


async def activate_image(session: MeterSession) -> None:
    """Activate the verified image (the meter switches to it; confirm with ``active_firmware``)."""
    await _step(
        "image_activate", session.action(IMAGE_TRANSFER, IMAGE_TRANSFER_OBIS, ACTIVATE, axdr.i8(0))
    )


def execution_time(at: datetime) -> axdr.Data:
    """A single action schedule's execution_time for ``at``: one (time, date) in UTC."""
    if at.tzinfo is None:
        raise ValueError("the activation time must carry a UTC offset")
    utc = at.astimezone(UTC)
    clock = bytes((utc.hour, utc.minute, utc.second, 0))
    day = utc.year.to_bytes(2, "big") + bytes((utc.month, utc.day, utc.isoweekday()))
    return axdr.array([axdr.structure([axdr.octets(clock), axdr.octets(day)])])


async def schedule_activation(session: MeterSession, at: datetime) -> None:
    """Have the meter activate the verified image at ``at`` by itself (image activation
    schedule, class 22, 0.0.15.0.2.255; the meter's clock is taken as UTC)."""
    ref = AttributeRef(SINGLE_ACTION_SCHEDULE, ACTIVATION_SCHEDULE_OBIS, EXECUTION_TIME)
    await _step("schedule image activation", session.set(ref, execution_time(at)))


async def active_firmware(session: MeterSession) -> str:
    """The meter's active firmware identifier (1.0.0.2.0.255) as text."""
    value = await session.get(AttributeRef(DATA, ACTIVE_FIRMWARE_OBIS, 2))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip("\x00 ")
    if isinstance(value, str):
        return value.strip("\x00 ")
    raise ImageTransferFailed(
        "read active firmware", None, f"the meter sent {type(value).__name__}"
    )
