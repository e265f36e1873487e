"""Independent DLMS clients for the simulator interop tests: dlms-cosem and gurux (blocking)."""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from dlms_cosem.client import DlmsClient  # type: ignore[import-untyped]
from dlms_cosem.io import BlockingTcpIO, HdlcTransport, TcpTransport  # type: ignore[import-untyped]
from dlms_cosem.security import (  # type: ignore[import-untyped]
    HighLevelSecurityGmacAuthentication,
    LowLevelSecurityAuthentication,
    NoSecurityAuthentication,
)
from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType, Security
from gurux_dlms.secure import GXDLMSSecureClient

from adapters.dlms.simulator import MeterKeys

# dlms-cosem logs every byte through structlog at debug level: keep test output readable.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

Transport = Literal["wrapper", "hdlc"]
Level = Literal["none", "lls", "hls"]
CLIENT_SAP: dict[Level, int] = {"none": 16, "lls": 17, "hls": 1}
CLIENT_TITLE = b"HESTEST1"

# Client invocation counters must grow across every HLS session with one meter: sessions
# take 1000 apart (dlms-cosem and gurux count up within a session).
_last_ic = [int(time.time())]


def next_invocation_counter() -> int:
    """A client invocation counter above every earlier one handed out in this process."""
    _last_ic[0] += 1000
    return _last_ic[0]


class FrameAwareTcpIO(BlockingTcpIO):  # type: ignore[misc]
    """dlms-cosem's BlockingTcpIO, handing out HDLC bytes so its flag scanner never stalls.

    dlms-cosem 25.1 ``HdlcTransport.recv_frame`` (io.py) reads "until the next 0x7E" and,
    if that read is a lone flag, reads until another one. IEC 62056-46 frames are delimited
    by their length field and are not byte-stuffed, so a frame whose FCS ends in 0x7E
    arrives as ``... 7E 7E``: the lone closing flag makes it wait for a third flag that never
    comes (about one frame in 256). This IO reads each frame by its length and returns the
    same bytes in the same until-0x7E pieces, except that it never leaves a closing flag on
    its own, and after a frame it answers one read with no bytes so dlms-cosem re-scans its
    buffer. All HDLC logic (SNRM/UA, sequence numbers, segmentation, RR, HCS/FCS checks,
    DISC) still runs in dlms-cosem.
    """

    _rest = b""
    _empty_next = False

    def recv_until(self, end: bytes) -> bytes:
        if self._empty_next:
            self._empty_next = False
            return b""
        if not self._rest:
            head = self.recv(3)
            length = ((head[1] & 0x07) << 8) | head[2]
            self._rest = head + self.recv(length - 2 + 1)
        i = self._rest.index(0x7E)
        cut = len(self._rest) if i + 2 == len(self._rest) else i + 1
        chunk, self._rest = self._rest[:cut], self._rest[cut:]
        if not self._rest:
            self._empty_next = True
        return chunk


def cosem_client(
    port: int, transport: Transport, level: Level, keys: MeterKeys, *, timeout: int = 5
) -> DlmsClient:
    """A dlms-cosem client for one simulated meter."""
    sap = CLIENT_SAP[level]
    io: BlockingTcpIO
    if transport == "wrapper":
        io = BlockingTcpIO(host="127.0.0.1", port=port, timeout=timeout)
        tr: Any = TcpTransport(
            client_logical_address=sap, server_logical_address=1, io=io, timeout=timeout
        )
    else:
        io = FrameAwareTcpIO(host="127.0.0.1", port=port, timeout=timeout)
        tr = HdlcTransport(
            client_logical_address=sap,
            server_logical_address=1,
            server_physical_address=17,
            io=io,
            timeout=timeout,
        )
    if level == "none":
        return DlmsClient(transport=tr, authentication=NoSecurityAuthentication())
    if level == "lls":
        return DlmsClient(
            transport=tr, authentication=LowLevelSecurityAuthentication(secret=keys.lls_password)
        )
    return DlmsClient(
        transport=tr,
        authentication=HighLevelSecurityGmacAuthentication(challenge_length=32),
        encryption_key=keys.ek,
        authentication_key=keys.ak,
        client_system_title=CLIENT_TITLE,
        client_initial_invocation_counter=next_invocation_counter(),
    )


@dataclass
class GuruxSession:
    """A blocking gurux client session over one TCP connection (wrapper or HDLC)."""

    client: GXDLMSClient
    sock: socket.socket

    @classmethod
    def open(
        cls,
        port: int,
        transport: Transport,
        level: Level,
        keys: MeterKeys,
        *,
        invocation_counter: int | None = None,
        general_protection: bool = False,
        max_info: tuple[int, int] | None = None,
    ) -> GuruxSession:
        """Connect, (SNRM/UA for HDLC), AARQ/AARE and HLS pass 3/4."""
        hdlc = transport == "hdlc"
        client = GXDLMSSecureClient(
            True,
            CLIENT_SAP[level],
            GXDLMSClient.getServerAddress(1, 17) if hdlc else 1,
            {
                "none": Authentication.NONE,
                "lls": Authentication.LOW,
                "hls": Authentication.HIGH_GMAC,
            }[level],
            keys.lls_password if level == "lls" else None,
            InterfaceType.HDLC if hdlc else InterfaceType.WRAPPER,
        )
        if level == "hls":
            client.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
            client.ciphering.systemTitle = CLIENT_TITLE
            client.ciphering.blockCipherKey = keys.ek
            client.ciphering.authenticationKey = keys.ak
            client.ciphering.invocationCounter = (
                next_invocation_counter() if invocation_counter is None else invocation_counter
            )
            if general_protection:
                from gurux_dlms.enums import Conformance

                client.proposedConformance |= Conformance.GENERAL_PROTECTION
        if max_info is not None:  # HDLC information field lengths the client proposes (tx, rx)
            client.hdlcSettings.maxInfoTX, client.hdlcSettings.maxInfoRX = max_info
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        session = cls(client, sock)
        session.connect()
        return session

    def _exchange(self, data: bytes | bytearray | None, reply: GXReplyData) -> None:
        if not data:
            return
        self.sock.sendall(bytes(data))
        buffer = GXByteBuffer()
        notify = GXReplyData()
        while not self.client.getData(buffer, reply, notify):
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("meter closed the connection")
            buffer.set(chunk)
        if reply.error:
            raise RuntimeError(f"DLMS error {reply.error}: {reply.getErrorMessage()}")

    def request(self, frames: Any) -> GXReplyData:
        """Send one request (its frames or PDUs), then follow block transfer to the end."""
        reply = GXReplyData()
        for frame in frames if isinstance(frames, list) else [frames]:
            self._exchange(frame, reply)
        while reply.isMoreData():
            self._exchange(self.client.receiverReady(reply), reply)
        return reply

    def connect(self) -> None:
        """SNRM/UA (HDLC only), AARQ/AARE and, for HLS, the reply_to_HLS_authentication."""
        snrm = self.client.snrmRequest()
        if snrm:
            self.client.parseUAResponse(self.request(snrm).data)
        self.client.parseAareResponse(self.request(self.client.aarqRequest()).data)
        if self.client.authentication > Authentication.LOW:
            reply = self.request(self.client.getApplicationAssociationRequest())
            self.client.parseApplicationAssociationResponse(reply.data)

    def read(self, obj: Any, attribute: int) -> Any:
        """GET one attribute into the gurux object and return its value."""
        reply = self.request(self.client.read(obj, attribute))
        return self.client.updateValue(obj, attribute, reply.value)

    def read_list(self, items: list[tuple[Any, int]]) -> list[Any]:
        """GET-request-with-list; updates the objects and returns the values."""
        values: list[Any] = []
        for message in self.client.readList(items):
            reply = self.request(message)
            values.extend(reply.value)
        self.client.updateValues(items, values)
        return values

    def close(self) -> None:
        """RLRQ (wrapper or ciphered) and DISC (HDLC), then close the socket."""
        try:
            hdlc = self.client.interfaceType == InterfaceType.HDLC
            if not hdlc or self.client.ciphering.security != Security.NONE:
                self.request(self.client.releaseRequest())
            if hdlc:
                self.request(self.client.disconnectRequest())
        finally:
            self.sock.close()
