"""The Gurux Python client as its own example reader drives a meter: gurux-dlms frames over
gurux-net's ``GXNet`` TCP media (gurux-common ``ReceiveParameters``), the invocation counter
read through the public client first, the association view parsed into gurux objects.

Independent of the head-end's session code (``adapters/dlms/gurux_session.py``): the media,
the reply loop and the counter handling are gurux's own way, written here after the pattern
of its ``GXDLMSReader`` example (GPL-2.0 test dependency; nothing of it ships).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gurux_common import ReceiveParameters
from gurux_dlms import GXByteBuffer, GXDLMSClient, GXDLMSException, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType, ObjectType, Security
from gurux_dlms.objects import GXDLMSData, GXDLMSObjectCollection
from gurux_dlms.secure import GXDLMSSecureClient
from gurux_net import GXNet
from gurux_net.enums import NetworkType

from adapters.dlms.simulator import MeterKeys
from tests.integration.dlms_clients import CLIENT_SAP, CLIENT_TITLE, Level, Transport

WAIT_MS = 5000
COUNTER = "0.0.43.1.0.255"


class GuruxNetReader:
    """One meter read the way Gurux's client example reads it (blocking)."""

    def __init__(self, port: int, transport: Transport, level: Level, keys: MeterKeys) -> None:
        self.hdlc = transport == "hdlc"
        self.level = level
        self.media = GXNet(NetworkType.TCP, "127.0.0.1", port)
        self.client = GXDLMSSecureClient(
            True,
            CLIENT_SAP[level],
            GXDLMSClient.getServerAddress(1, 17) if self.hdlc else 1,
            {
                "none": Authentication.NONE,
                "lls": Authentication.LOW,
                "hls": Authentication.HIGH_GMAC,
            }[level],
            keys.lls_password if level == "lls" else None,
            InterfaceType.HDLC if self.hdlc else InterfaceType.WRAPPER,
        )
        if level == "hls":
            cipher = self.client.ciphering
            cipher.security = Security.AUTHENTICATION_ENCRYPTION
            cipher.systemTitle = CLIENT_TITLE
            cipher.blockCipherKey = keys.ek
            cipher.authenticationKey = keys.ak
        self.objects = GXDLMSObjectCollection()

    # -- the example's reply loop --------------------------------------------------------

    def _packet(self, data: Any, reply: GXReplyData) -> None:
        if not data:
            return
        notify = GXReplyData()
        reply.error = 0
        p = ReceiveParameters()
        p.eop = 0x7E if self.hdlc else None
        p.allData = True
        p.waitTime = WAIT_MS
        p.count = 5 if self.hdlc else 8
        self.media.eop = p.eop
        rd = GXByteBuffer()
        with self.media.getSynchronous():
            if not reply.isStreaming():
                self.media.send(data)
            while not self.client.getData(rd, reply, notify):
                if not p.eop:
                    p.count = self.client.getFrameSize(rd)
                if not self.media.receive(p):
                    raise TimeoutError("no reply from the meter in time")
                rd.set(p.reply)
                p.reply = None
        if reply.error:
            raise GXDLMSException(reply.error)

    def _block(self, data: Any, reply: GXReplyData) -> None:
        """Send a request (its frames) and follow block transfer to the end."""
        if isinstance(data, list):
            for frame in data:
                reply.clear()
                self._block(frame, reply)
            return
        self._packet(data, reply)
        while reply.isMoreData():
            self._packet(None if reply.isStreaming() else self.client.receiverReady(reply), reply)

    # -- association -----------------------------------------------------------------------

    def _associate(self) -> None:
        reply = GXReplyData()
        snrm = self.client.snrmRequest()
        if snrm:
            self._packet(snrm, reply)
            self.client.parseUAResponse(reply.data)
        reply.clear()
        self._block(self.client.aarqRequest(), reply)
        self.client.parseAareResponse(reply.data)
        if self.client.authentication > Authentication.LOW:
            reply.clear()
            # The example reads this reply with one packet; a meter that segments its HDLC
            # replies needs the receive-ready loop here too.
            self._block(self.client.getApplicationAssociationRequest(), reply)
            self.client.parseApplicationAssociationResponse(reply.data)

    def _update_frame_counter(self) -> int:
        """Read the meter's counter as the public client (16, no security); ours = it + 1."""
        client = self.client
        saved = (client.clientAddress, client.authentication, client.ciphering.security)
        try:
            client.clientAddress = 16
            client.authentication = Authentication.NONE
            client.ciphering.security = Security.NONE
            self._associate()
            counter = GXDLMSData(COUNTER)
            value = int(self.read(counter, 2))
            self._disconnect()
        finally:
            client.clientAddress, client.authentication, client.ciphering.security = saved
        client.ciphering.invocationCounter = value + 1
        return value

    def _disconnect(self) -> None:
        reply = GXReplyData()
        if not self.hdlc or self.client.ciphering.security != Security.NONE:
            self._block(self.client.releaseRequest(), reply)
        if self.hdlc:
            reply.clear()
            self._packet(self.client.disconnectRequest(), reply)

    def open(self) -> int | None:
        """Open the media and associate (after the frame counter for HLS); the counter read."""
        self.media.open()
        counter = self._update_frame_counter() if self.level == "hls" else None
        self._associate()
        return counter

    def close(self) -> None:
        """Release and disconnect as the example does, then close the media."""
        try:
            self._disconnect()
        finally:
            self.media.close()

    # -- reads -----------------------------------------------------------------------------

    def read(self, item: Any, attribute: int) -> Any:
        """GET one attribute into the gurux object."""
        reply = GXReplyData()
        self._block(self.client.read(item, attribute)[0], reply)
        return self.client.updateValue(item, attribute, reply.value)

    def association_view(self) -> GXDLMSObjectCollection:
        """The association's object list as gurux objects."""
        reply = GXReplyData()
        self._block(self.client.getObjectsRequest(), reply)
        self.objects = self.client.parseObjects(reply.data, True)
        return self.objects

    def rows(self, profile: Any, start: datetime, end: datetime) -> list[Any]:
        """Profile rows by range (the profile's capture objects read first)."""
        self.read(profile, 3)
        reply = GXReplyData()
        self._block(self.client.readRowsByRange(profile, start, end), reply)
        rows: list[Any] = self.client.updateValue(profile, 2, reply.value)
        return rows

    def find(self, kind: ObjectType, obis: str) -> Any:
        """An object of the parsed view."""
        return self.objects.findByLN(kind, obis)
