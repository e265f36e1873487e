"""The image transfer object (COSEM class 18) of a simulated meter.

Image blocks are counted, not kept: verification checks that every block arrived with the
right length, activation makes the image identifier the active firmware (persisted, as a
meter's reboot into new firmware). The transfer state lives on the meter, so it survives a
dropped connection; ``Behaviour.drop_at_block`` drops one connection when that block arrives.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from adapters.dlms import axdr
from adapters.dlms.axdr import Data, Tag
from adapters.dlms.cosem_time import CosemTimeError, decode_datetime
from adapters.dlms.simulator.apdu import DataAccessResult as DAR
from adapters.dlms.simulator.limits import ConnectionDropped
from adapters.dlms.simulator.shapes import ArrayOf, Octets, StructOf, fits

if TYPE_CHECKING:
    from adapters.dlms.simulator.meter import SimulatedMeter

MAX_IMAGE_SIZE = 16 * 1024 * 1024
_INITIATE = StructOf((Octets(), Tag.DOUBLE_LONG_UNSIGNED))
_BLOCK = StructOf((Tag.DOUBLE_LONG_UNSIGNED, Octets()))
_EXECUTION_TIME = ArrayOf(StructOf((Octets(4), Octets(5))))
IMAGE_ACTIVATION_SCRIPT = bytes((0, 0, 10, 0, 107, 255))


class TransferStatus(enum.IntEnum):
    """image_transfer_status (attribute 6)."""

    NOT_INITIATED = 0
    INITIATED = 1
    VERIFICATION_INITIATED = 2
    VERIFICATION_SUCCESSFUL = 3
    VERIFICATION_FAILED = 4
    ACTIVATION_INITIATED = 5
    ACTIVATION_SUCCESSFUL = 6
    ACTIVATION_FAILED = 7


class SimulatedImageTransfer:
    """Attributes 2..7 and methods 1..4 of the image transfer object."""

    def __init__(self, meter: SimulatedMeter) -> None:
        self.meter = meter
        self.block_size = meter.behaviour.image_block_size
        self.enabled = False
        self.status = TransferStatus.NOT_INITIATED
        self.identifier = b""
        self.size = 0
        self.received: bytearray = bytearray()
        """One flag per block: 1 once the block arrived with the right length."""
        self.verified_at = 0.0
        self.dropped = False
        self.blocks_received = 0
        """Image blocks accepted over the meter's life (for tests)."""
        self.activation_at: float | None = None
        """When the image activation schedule activates the verified image (meter clock)."""

    @property
    def total(self) -> int:
        """Blocks of the initiated image."""
        return -(-self.size // self.block_size)

    def refresh(self) -> None:
        """Finish a verification whose time is up; run a scheduled activation that is due."""
        self._refresh()
        if self.activation_at is not None and self.activation_at <= self.meter.meter_now():
            self.activation_at = None
            if self.status is TransferStatus.VERIFICATION_SUCCESSFUL:
                self._activate()
            elif self.status is not TransferStatus.NOT_INITIATED:
                self.status = TransferStatus.ACTIVATION_FAILED

    def _activate(self) -> None:
        self.meter.state.set_firmware(self.identifier.decode("ascii", "replace"))
        self.status = TransferStatus.ACTIVATION_SUCCESSFUL

    def _refresh(self) -> None:
        if (
            self.status is TransferStatus.VERIFICATION_INITIATED
            and self.meter.now() >= self.verified_at
        ):
            complete = self.total > 0 and all(self.received)
            self.status = (
                TransferStatus.VERIFICATION_SUCCESSFUL
                if complete
                else TransferStatus.VERIFICATION_FAILED
            )

    def read(self, attr: int) -> Data:
        """GET attribute ``attr`` (2..7)."""
        self.refresh()
        if attr == 2:
            return axdr.u32(self.block_size)
        if attr == 3:
            return Data(Tag.BIT_STRING, "".join("1" if b else "0" for b in self.received))
        if attr == 4:
            first = self.received.find(0)
            return axdr.u32(len(self.received) if first < 0 else first)
        if attr == 5:
            return axdr.boolean(self.enabled)
        if attr == 6:
            return axdr.enum_(self.status)
        info = (
            [axdr.structure([axdr.u32(self.size), axdr.octets(self.identifier), axdr.octets(b"")])]
            if self.status is not TransferStatus.NOT_INITIATED
            else []
        )
        return axdr.array(info)

    def write(self, attr: int, value: Data) -> DAR:
        """SET attribute 5 (image_transfer_enabled)."""
        if attr != 5 or value.tag is not Tag.BOOLEAN:
            return DAR.TYPE_UNMATCHED
        self.enabled = bool(value.value)
        return DAR.SUCCESS

    def act(self, method: int, params: Data | None) -> DAR:
        """Methods 1 initiate, 2 block transfer, 3 verify, 4 activate."""
        self.refresh()
        if method == 1:
            return self._initiate(params)
        if method == 2:
            return self._block(params)
        if method == 3:
            if self.status not in (
                TransferStatus.INITIATED,
                TransferStatus.VERIFICATION_FAILED,
                TransferStatus.VERIFICATION_SUCCESSFUL,
            ):
                return DAR.TEMPORARY_FAILURE
            self.status = TransferStatus.VERIFICATION_INITIATED
            self.verified_at = self.meter.now() + self.meter.behaviour.image_verify_s
            self._refresh()
            return DAR.SUCCESS
        if self.status is not TransferStatus.VERIFICATION_SUCCESSFUL:
            return DAR.TEMPORARY_FAILURE
        self._activate()
        return DAR.SUCCESS

    def _initiate(self, params: Data | None) -> DAR:
        if params is None or not fits(params, _INITIATE):
            return DAR.TYPE_UNMATCHED
        if not self.enabled:
            return DAR.TEMPORARY_FAILURE
        identifier, size = params.items()
        if not 0 < size.integer() <= MAX_IMAGE_SIZE or not identifier.octets():
            return DAR.OTHER_REASON
        self.identifier, self.size = identifier.octets(), size.integer()
        self.received = bytearray(self.total)
        self.status = TransferStatus.INITIATED
        return DAR.SUCCESS

    def _block(self, params: Data | None) -> DAR:
        if params is None or not fits(params, _BLOCK):
            return DAR.TYPE_UNMATCHED
        if self.status is not TransferStatus.INITIATED:
            return DAR.TEMPORARY_FAILURE
        number, value = params.items()
        n = number.integer()
        if n >= self.total:
            return DAR.OTHER_REASON
        expected = min(self.block_size, self.size - n * self.block_size)
        if len(value.octets()) != expected:
            return DAR.OTHER_REASON
        if n == self.meter.behaviour.drop_at_block and not self.dropped:
            self.dropped = True
            raise ConnectionDropped(f"image block {n} arrived: dropping the connection (fault)")
        self.received[n] = 1
        self.blocks_received += 1
        return DAR.SUCCESS


class SimulatedActivationSchedule:
    """Image activation schedule (single action schedule, class 22, 0.0.15.0.2.255): the
    image activation script at one execution time (time and date, the meter's clock)."""

    def __init__(self, transfer: SimulatedImageTransfer) -> None:
        self.transfer = transfer
        self.execution_time = axdr.array([])

    def read(self, attr: int) -> Data:
        """GET executed_script (2), type (3) or execution_time (4)."""
        if attr == 2:
            return axdr.structure([axdr.octets(IMAGE_ACTIVATION_SCRIPT), axdr.u16(1)])
        if attr == 3:
            return axdr.enum_(1)  # one execution time, no wildcards
        return self.execution_time

    def write(self, attr: int, value: Data) -> DAR:
        """SET execution_time (4): at most one entry, a specific date and time (or none)."""
        if attr != 4 or not fits(value, _EXECUTION_TIME) or len(value.items()) > 1:
            return DAR.TYPE_UNMATCHED
        at = None
        for entry in value.items():
            clock, day = (v.octets() for v in entry.items())
            try:
                at = decode_datetime(day + clock + b"\x00\x00\x00").timestamp()
            except CosemTimeError:
                return DAR.OTHER_REASON
        self.execution_time = value
        self.transfer.activation_at = at
        return DAR.SUCCESS

    def act(self, method: int, params: Data | None) -> DAR:
        """The schedule has no methods."""
        return DAR.OBJECT_UNDEFINED
