"""IEC 62056-47 wrapper framing for DLMS over TCP: version, source/destination wPort, length."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

WRAPPER_VERSION = 1
HEADER_LEN = 8
MAX_APDU_LEN = 0xFFFF
_HEADER = struct.Struct(">HHHH")


class WrapperError(ValueError):
    """A wrapper frame that breaks the framing rules (version, length limit, truncation)."""


@dataclass(frozen=True, slots=True)
class WrapperFrame:
    """One wrapper PDU: source and destination wPort and the APDU it carries."""

    source: int
    destination: int
    apdu: bytes


def encode(source: int, destination: int, apdu: bytes) -> bytes:
    """Frame an APDU: 8-byte header (version 1, source, destination, length) and the APDU."""
    if len(apdu) > MAX_APDU_LEN:
        raise WrapperError(f"APDU of {len(apdu)} bytes exceeds the wrapper limit {MAX_APDU_LEN}")
    for name, port in (("source", source), ("destination", destination)):
        if not 0 <= port <= 0xFFFF:
            raise WrapperError(f"{name} wPort {port} outside 0..65535")
    return _HEADER.pack(WRAPPER_VERSION, source, destination, len(apdu)) + apdu


def parse_header(header: bytes, max_apdu_len: int = MAX_APDU_LEN) -> tuple[int, int, int]:
    """Check an 8-byte header; return (source, destination, APDU length)."""
    if len(header) != HEADER_LEN:
        raise WrapperError(f"wrapper header needs {HEADER_LEN} bytes, got {len(header)}")
    version, source, destination, length = _HEADER.unpack(header)
    if version != WRAPPER_VERSION:
        raise WrapperError(f"wrapper version {version} is not 1")
    if length == 0:
        raise WrapperError("wrapper frame carries an empty APDU")
    if length > max_apdu_len:
        raise WrapperError(f"wrapper length {length} exceeds the limit {max_apdu_len}")
    return source, destination, length


def decode(frame: bytes, max_apdu_len: int = MAX_APDU_LEN) -> WrapperFrame:
    """Parse one complete wrapper frame."""
    source, destination, length = parse_header(frame[:HEADER_LEN], max_apdu_len)
    apdu = frame[HEADER_LEN:]
    if len(apdu) != length:
        raise WrapperError(f"wrapper header says {length} APDU bytes, frame has {len(apdu)}")
    return WrapperFrame(source, destination, apdu)


async def read_frame(
    reader: asyncio.StreamReader,
    *,
    max_apdu_len: int = MAX_APDU_LEN,
    first: bytes = b"",
) -> WrapperFrame:
    """Read one wrapper frame; ``first`` holds header bytes already read by the caller.

    Raises ``WrapperError`` on a bad header and ``asyncio.IncompleteReadError`` when the
    peer closes mid-frame.
    """
    header = first + await reader.readexactly(HEADER_LEN - len(first))
    source, destination, length = parse_header(header, max_apdu_len)
    apdu = await reader.readexactly(length)
    return WrapperFrame(source, destination, apdu)


async def write_frame(
    writer: asyncio.StreamWriter, source: int, destination: int, apdu: bytes
) -> None:
    """Write one wrapper frame and wait until the transport buffer drains."""
    writer.write(encode(source, destination, apdu))
    await writer.drain()
