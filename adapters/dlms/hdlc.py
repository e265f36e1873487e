"""HDLC frame format type 3 for DLMS (IEC 62056-46): addresses, control field, HCS/FCS, SNRM/UA.

Frame: 7E | format (0xA, segmentation bit, 11-bit length) | destination | source | control |
HCS (when there is an information field) | information | FCS | 7E. HCS and FCS are
CRC-16/X.25, sent least significant byte first. No byte stuffing: the length field frames it.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

FLAG = 0x7E
MAX_FRAME_LEN = 0x7FF
LLC_REQUEST = b"\xe6\xe6\x00"
LLC_RESPONSE = b"\xe6\xe7\x00"
DEFAULT_MAX_INFO = 128
DEFAULT_WINDOW = 1


class HdlcError(ValueError):
    """A frame that breaks HDLC rules: bad flag, format, address, check sequence or length."""


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/X.25 (reflected 0x1021, init and final xor 0xFFFF), the HDLC HCS/FCS."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


def _check_bytes(data: bytes) -> bytes:
    return crc16(data).to_bytes(2, "little")


class Kind(enum.Enum):
    """Frame types DLMS uses."""

    I = "I"  # noqa: E741 - the standard's name for information frames
    RR = "RR"
    RNR = "RNR"
    SNRM = "SNRM"
    DISC = "DISC"
    UA = "UA"
    DM = "DM"
    FRMR = "FRMR"
    UI = "UI"


_UNNUMBERED = {
    0x83: Kind.SNRM,
    0x43: Kind.DISC,
    0x63: Kind.UA,
    0x0F: Kind.DM,
    0x87: Kind.FRMR,
    0x03: Kind.UI,
}
_UNNUMBERED_CODE = {kind: code for code, kind in _UNNUMBERED.items()}
POLL_FINAL = 0x10


@dataclass(frozen=True, slots=True)
class Control:
    """A decoded control field: kind, poll/final bit and the sequence numbers it carries."""

    kind: Kind
    poll_final: bool
    send_seq: int = 0
    receive_seq: int = 0

    def encode(self) -> int:
        """The control byte."""
        pf = POLL_FINAL if self.poll_final else 0
        if self.kind is Kind.I:
            return (self.receive_seq << 5) | pf | (self.send_seq << 1)
        if self.kind is Kind.RR:
            return (self.receive_seq << 5) | pf | 0x01
        if self.kind is Kind.RNR:
            return (self.receive_seq << 5) | pf | 0x05
        return _UNNUMBERED_CODE[self.kind] | pf


def parse_control(byte: int) -> Control:
    """Decode a control byte."""
    pf = bool(byte & POLL_FINAL)
    if not byte & 0x01:
        return Control(Kind.I, pf, (byte >> 1) & 0x07, byte >> 5)
    if byte & 0x0F == 0x01:
        return Control(Kind.RR, pf, 0, byte >> 5)
    if byte & 0x0F == 0x05:
        return Control(Kind.RNR, pf, 0, byte >> 5)
    kind = _UNNUMBERED.get(byte & ~POLL_FINAL & 0xFF)
    if kind is None:
        raise HdlcError(f"unknown control field 0x{byte:02X}")
    return Control(kind, pf)


def encode_address(upper: int, lower: int | None = None, size: int | None = None) -> bytes:
    """An HDLC address of 1, 2 or 4 bytes (7 address bits per byte, last byte's bit 0 set).

    Clients use a 1-byte address (``upper`` = SAP). Servers use upper = logical address and
    lower = physical address; ``size`` forces 2 or 4 bytes, else the smallest that fits.
    """
    if lower is None:
        if not 0 <= upper < 0x80:
            raise HdlcError(f"1-byte HDLC address {upper} outside 0..127")
        return bytes(((upper << 1) | 1,))
    if size is None:
        size = 2 if upper < 0x80 and lower < 0x80 else 4
    if size == 2 and upper < 0x80 and lower < 0x80:
        return bytes((upper << 1, (lower << 1) | 1))
    if size == 4 and upper < 0x4000 and lower < 0x4000:
        return bytes(
            ((upper >> 7) << 1, (upper & 0x7F) << 1, (lower >> 7) << 1, ((lower & 0x7F) << 1) | 1)
        )
    raise HdlcError(f"HDLC address {upper}/{lower} does not fit {size} bytes")


@dataclass(frozen=True, slots=True)
class Address:
    """A decoded address: its raw bytes, upper part and lower part (None for 1 byte)."""

    raw: bytes
    upper: int
    lower: int | None


def parse_address(frame: bytes, pos: int) -> tuple[Address, int]:
    """Read an address at ``pos`` (ends at the byte whose bit 0 is set); return it and the end."""
    end = pos
    while True:
        if end >= len(frame) or end - pos >= 4:
            raise HdlcError("address is not terminated within 4 bytes")
        if frame[end] & 1:
            break
        end += 1
    raw = bytes(frame[pos : end + 1])
    parts = [b >> 1 for b in raw]
    if len(raw) == 1:
        return Address(raw, parts[0], None), end + 1
    if len(raw) == 2:
        return Address(raw, parts[0], parts[1]), end + 1
    if len(raw) == 4:
        return Address(raw, (parts[0] << 7) | parts[1], (parts[2] << 7) | parts[3]), end + 1
    raise HdlcError(f"address of {len(raw)} bytes (only 1, 2 or 4 are valid)")


@dataclass(frozen=True, slots=True)
class Frame:
    """One HDLC frame without its flags."""

    destination: Address
    source: Address
    control: Control
    info: bytes = b""
    segmented: bool = False


def encode_frame(
    destination: bytes, source: bytes, control: Control, info: bytes = b"", segmented: bool = False
) -> bytes:
    """A complete frame with flags; ``destination``/``source`` are encoded addresses."""
    length = 2 + len(destination) + len(source) + 1 + 2 + (len(info) + 2 if info else 0)
    if length > MAX_FRAME_LEN:
        raise HdlcError(f"frame of {length} bytes exceeds the 11-bit length field")
    fmt = 0xA000 | (0x0800 if segmented else 0) | length
    header = fmt.to_bytes(2, "big") + destination + source + bytes((control.encode(),))
    body = header + (_check_bytes(header) + info if info else b"")
    return bytes((FLAG,)) + body + _check_bytes(body) + bytes((FLAG,))


def decode_frame(content: bytes) -> Frame:
    """Parse a frame given without its flags; checks format, length, HCS and FCS."""
    if len(content) < 7:
        raise HdlcError(f"frame of {len(content)} bytes is too short")
    fmt = int.from_bytes(content[:2], "big")
    if fmt >> 12 != 0xA:
        raise HdlcError(f"frame format 0x{fmt >> 12:X} is not type 3 (0xA)")
    if fmt & 0x7FF != len(content):
        raise HdlcError(f"format says {fmt & 0x7FF} bytes, frame has {len(content)}")
    if _check_bytes(content[:-2]) != content[-2:]:
        raise HdlcError("FCS mismatch")
    destination, pos = parse_address(content, 2)
    source, pos = parse_address(content, pos)
    if pos >= len(content) - 2:
        raise HdlcError("frame has no control field")
    control = parse_control(content[pos])
    pos += 1
    info = b""
    if pos < len(content) - 2:
        if len(content) - 2 - pos < 2:
            raise HdlcError("frame has neither HCS nor a bare FCS after the control field")
        if _check_bytes(content[:pos]) != content[pos : pos + 2]:
            raise HdlcError("HCS mismatch")
        info = bytes(content[pos + 2 : -2])
    return Frame(destination, source, control, info, bool(fmt & 0x0800))


async def read_frame(reader: asyncio.StreamReader, *, first: bytes = b"") -> bytes:
    """Read one frame from a stream; return its content without flags.

    Leading flags (including a shared flag between back-to-back frames) are skipped.
    ``first`` holds bytes the caller already read. Raises ``HdlcError`` on a bad format
    or closing flag, ``asyncio.IncompleteReadError`` if the peer closes mid-frame.
    """
    pending = bytearray(first)
    while True:
        byte = pending.pop(0) if pending else (await reader.readexactly(1))[0]
        if byte != FLAG:
            break
    if byte >> 4 != 0xA:
        raise HdlcError(f"byte 0x{byte:02X} does not start an HDLC type 3 frame")
    second = pending.pop(0) if pending else (await reader.readexactly(1))[0]
    length = ((byte & 0x07) << 8) | second
    if length < 7:
        raise HdlcError(f"frame length {length} is too short")
    need = length - 2 + 1  # the rest of the frame and its closing flag
    rest = bytes(pending[:need])
    if len(rest) < need:
        rest += await reader.readexactly(need - len(rest))
    if rest[-1] != FLAG:
        raise HdlcError("frame does not end with the 0x7E flag")
    return bytes((byte, second)) + rest[:-1]


@dataclass(frozen=True, slots=True)
class LinkParameters:
    """HDLC parameters negotiated by SNRM/UA, from the sender's point of view."""

    max_info_tx: int = DEFAULT_MAX_INFO
    max_info_rx: int = DEFAULT_MAX_INFO
    window_tx: int = DEFAULT_WINDOW
    window_rx: int = DEFAULT_WINDOW

    def encode(self) -> bytes:
        """The SNRM/UA information field (format 0x81, group 0x80)."""
        body = bytearray()
        for pid, value in (
            (0x05, self.max_info_tx),
            (0x06, self.max_info_rx),
            (0x07, self.window_tx),
            (0x08, self.window_rx),
        ):
            raw = value.to_bytes(1 if value < 0x100 else 2 if value < 0x10000 else 4, "big")
            body += bytes((pid, len(raw))) + raw
        return bytes((0x81, 0x80, len(body))) + body


def parse_link_parameters(info: bytes) -> LinkParameters:
    """Parse an SNRM/UA information field; absent parameters take the defaults."""
    if not info:
        return LinkParameters()
    if len(info) < 3 or info[0] != 0x81 or info[1] != 0x80:
        raise HdlcError("SNRM/UA parameters must start with format 0x81, group 0x80")
    if info[2] != len(info) - 3:
        raise HdlcError(f"SNRM/UA parameter group says {info[2]} bytes, has {len(info) - 3}")
    values: dict[int, int] = {}
    pos = 3
    while pos < len(info):
        if pos + 2 > len(info):
            raise HdlcError("truncated SNRM/UA parameter")
        pid, size = info[pos], info[pos + 1]
        raw = info[pos + 2 : pos + 2 + size]
        if len(raw) != size or size not in (1, 2, 4):
            raise HdlcError(f"SNRM/UA parameter 0x{pid:02X} has a bad length {size}")
        values[pid] = int.from_bytes(raw, "big")
        pos += 2 + size
    return LinkParameters(
        max_info_tx=values.get(0x05, DEFAULT_MAX_INFO),
        max_info_rx=values.get(0x06, DEFAULT_MAX_INFO),
        window_tx=values.get(0x07, DEFAULT_WINDOW),
        window_rx=values.get(0x08, DEFAULT_WINDOW),
    )
