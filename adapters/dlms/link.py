"""Byte links to meters over TCP: whole wrapper or HDLC frames in, frames out, with timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import struct

from adapters.dlms.session import LinkError, SessionTimeout, Unreachable

HDLC_FLAG = 0x7E
WRAPPER_HEADER = struct.Struct(">HHHH")
MAX_HDLC_FRAME = 2048
MAX_WRAPPER_APDU = 0xFFFF


class Link:
    """A TCP connection that reads one complete frame at a time."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        timeout: float,
        hdlc: bool,
        where: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.timeout = timeout
        self.hdlc = hdlc
        self.where = where

    @classmethod
    async def connect(cls, host: str, port: int, exchange_s: float, hdlc: bool) -> Link:
        """Open the TCP connection; ``Unreachable`` when it cannot be made in time."""
        where = f"{host}:{port}"
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), exchange_s)
        except TimeoutError:
            raise Unreachable(f"no TCP connection to {where} within {exchange_s:g} s") from None
        except OSError as exc:
            raise Unreachable(f"no TCP connection to {where}: {exc.strerror or exc}") from None
        return cls(reader, writer, exchange_s, hdlc, where)

    async def send(self, frame: bytes) -> None:
        """Write one frame."""
        try:
            self._writer.write(frame)
            await asyncio.wait_for(self._writer.drain(), self.timeout)
        except TimeoutError:
            raise SessionTimeout(f"{self.where} did not take our data in time") from None
        except OSError as exc:
            raise LinkError(f"connection to {self.where} broke: {exc.strerror or exc}") from None

    async def receive(self) -> bytes:
        """Read one complete frame (with its header or flags)."""
        try:
            return await asyncio.wait_for(
                self._hdlc_frame() if self.hdlc else self._wrapper_frame(), self.timeout
            )
        except TimeoutError:
            raise SessionTimeout(f"{self.where} did not answer within {self.timeout:g} s") from None
        except asyncio.IncompleteReadError:
            raise LinkError(f"{self.where} closed the connection mid-frame") from None
        except OSError as exc:
            raise LinkError(f"connection to {self.where} broke: {exc.strerror or exc}") from None

    async def _wrapper_frame(self) -> bytes:
        header = await self._reader.readexactly(WRAPPER_HEADER.size)
        version, _source, _destination, length = WRAPPER_HEADER.unpack(header)
        if version != 1 or length == 0:
            raise LinkError(f"{self.where} sent a wrapper header with version {version}")
        return header + await self._reader.readexactly(length)

    async def _hdlc_frame(self) -> bytes:
        # Skip inter-frame flags, then read the frame format field: type 0xA, 11-bit length.
        first = await self._reader.readexactly(1)
        while first[0] == HDLC_FLAG:
            first = await self._reader.readexactly(1)
        second = await self._reader.readexactly(1)
        if first[0] & 0xF0 != 0xA0:
            raise LinkError(f"{self.where} sent a frame that is not HDLC type 3")
        length = ((first[0] & 0x07) << 8) | second[0]
        if not 5 <= length <= MAX_HDLC_FRAME:
            raise LinkError(f"{self.where} sent an HDLC frame length of {length}")
        rest = await self._reader.readexactly(length - 2 + 1)  # remaining bytes + closing flag
        if rest[-1] != HDLC_FLAG:
            raise LinkError(f"{self.where} sent an HDLC frame without its closing flag")
        return bytes((HDLC_FLAG,)) + first + second + rest

    async def close(self) -> None:
        """Close the TCP connection (no DLMS goodbye; the session sends that first)."""
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)
