"""Server side of an HDLC link (IEC 62056-46) over a TCP stream, window size 1.

SNRM/UA negotiates the maximum information field lengths; I-frames carry numbered
segments both ways (the client's segments are acknowledged with RR, ours wait for the
client's RR); DISC ends the link (UA, or DM when not connected).
"""

from __future__ import annotations

import asyncio
import logging

from adapters.dlms import hdlc
from adapters.dlms.hdlc import Control, Frame, Kind, LinkParameters
from adapters.dlms.simulator.association import Association
from adapters.dlms.simulator.limits import Limits, ProtocolViolation
from adapters.dlms.simulator.meter import SimulatedMeter

log = logging.getLogger(__name__)

SERVER_LOGICAL = 1
SERVER_PHYSICAL = 17


class HdlcLink:
    """One client's HDLC link to one simulated meter."""

    def __init__(
        self,
        meter: SimulatedMeter,
        peer: str,
        limits: Limits,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.meter, self.peer, self.limits = meter, peer, limits
        self.reader, self.writer = reader, writer
        self.connected = False
        self.params = LinkParameters()
        self.vs = 0  # next send sequence number
        self.vr = 0  # next expected receive sequence number
        self.rx = bytearray()
        self.association: Association | None = None
        self._client = b""
        self._server = b""

    async def _next_frame(self, first: bytes, wait: float) -> Frame | None:
        if not first:
            first = await asyncio.wait_for(self.reader.read(1), wait)
            if not first:
                return None
        content = await asyncio.wait_for(
            hdlc.read_frame(self.reader, first=first), self.limits.frame_timeout
        )
        return hdlc.decode_frame(content)

    def _send(self, control: Control, info: bytes = b"", segmented: bool = False) -> None:
        frame = hdlc.encode_frame(self._client, self._server, control, info, segmented)
        if self.meter.behaviour.hdlc_repeated_flags:
            frame = bytes((hdlc.FLAG,)) + frame  # an extra opening flag, as some meters send
        self.writer.write(frame)

    async def run(self, first: bytes) -> None:
        """Serve frames until the peer closes the connection."""
        while True:
            frame = await self._next_frame(first, self.limits.idle_timeout)
            first = b""
            if frame is None:
                return
            dest = frame.destination
            if dest.upper != SERVER_LOGICAL or dest.lower not in (None, SERVER_PHYSICAL):
                log.info(
                    "meter %s: frame for HDLC address %s/%s ignored",
                    self.meter.serial,
                    dest.upper,
                    dest.lower,
                )
                continue
            if frame.source.lower is not None:
                raise ProtocolViolation("client HDLC address must be one byte")
            self._client, self._server = frame.source.raw, dest.raw
            await self._on_frame(frame)
            await self.writer.drain()

    async def _on_frame(self, frame: Frame) -> None:
        kind = frame.control.kind
        if kind is Kind.SNRM:
            self._snrm(frame)
        elif kind is Kind.DISC:
            self._send(Control(Kind.UA if self.connected else Kind.DM, True))
            self.connected, self.association = False, None
        elif kind is Kind.I:
            await self._information(frame)
        elif kind is Kind.RR:
            if self.connected:
                self._send(Control(Kind.RR, True, receive_seq=self.vr))
            else:
                self._send(Control(Kind.DM, True))
        else:
            log.info("meter %s: HDLC %s frame ignored", self.meter.serial, kind.name)

    def _snrm(self, frame: Frame) -> None:
        proposed = hdlc.parse_link_parameters(frame.info)
        top = self.limits.max_info
        send = min(top, self.meter.behaviour.hdlc_max_info or top)
        self.params = LinkParameters(
            max_info_tx=min(proposed.max_info_rx, send),
            max_info_rx=min(proposed.max_info_tx, top),
            window_tx=1,
            window_rx=1,
        )
        self.connected, self.vs, self.vr, self.association = True, 0, 0, None
        self.rx.clear()
        self._send(Control(Kind.UA, True), self.params.encode())

    async def _information(self, frame: Frame) -> None:
        if not self.connected:
            self._send(Control(Kind.DM, True))
            return
        control = frame.control
        if control.send_seq != self.vr:
            raise ProtocolViolation(f"I-frame N(S)={control.send_seq}, expected {self.vr}")
        if len(frame.info) > self.params.max_info_rx:
            raise ProtocolViolation(
                f"information field of {len(frame.info)} bytes exceeds the negotiated "
                f"{self.params.max_info_rx}"
            )
        self.vr = (self.vr + 1) % 8
        self.rx += frame.info
        if len(self.rx) > self.limits.max_apdu + len(hdlc.LLC_REQUEST):
            raise ProtocolViolation(f"APDU longer than {self.limits.max_apdu} bytes")
        if frame.segmented:
            self._send(Control(Kind.RR, True, receive_seq=self.vr))
            return
        data, self.rx = bytes(self.rx), bytearray()
        if not data.startswith(hdlc.LLC_REQUEST) or len(data) == len(hdlc.LLC_REQUEST):
            raise ProtocolViolation("I-frame data must be LLC E6 E6 00 and an APDU")
        if self.association is None:
            client_sap = frame.source.upper
            self.association = Association(self.meter, client_sap, self.peer)
        response = self.association.handle(data[len(hdlc.LLC_REQUEST) :])
        await self._send_segmented(hdlc.LLC_RESPONSE + response)

    async def _send_segmented(self, data: bytes) -> None:
        size = self.params.max_info_tx
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        if len(chunks) > 1:
            self.meter.stats.segmented_replies += 1
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            self._send(Control(Kind.I, True, self.vs, self.vr), chunk, segmented=not last)
            self.vs = (self.vs + 1) % 8
            if last:
                return
            await self.writer.drain()
            ack = await self._next_frame(b"", self.limits.frame_timeout)
            if ack is None:
                raise ProtocolViolation("peer closed during a segmented response")
            if ack.control.kind is not Kind.RR or ack.control.receive_seq != self.vs:
                raise ProtocolViolation(
                    f"expected RR N(R)={self.vs} during a segmented response, got "
                    f"{ack.control.kind.name} N(R)={ack.control.receive_seq}"
                )
