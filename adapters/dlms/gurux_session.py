"""``MeterSession`` on gurux-dlms (GPLv2, imported nowhere else): gurux builds and parses
frames, this module moves them over asyncio TCP (no threads, no blocking socket calls).

Gurux's Python port prints diagnostics to stdout (deciphering details, challenges); its
modules get a silent ``print``. Its AES-GCM is replaced by ``gurux_crypto`` (fast, and it
verifies tags, which gurux's own stream does not when deciphering). Every decryption reports
the sender's invocation counter through a hook on ``GXCiphering.decrypt``, which lets the
session reject a non-increasing one.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from gurux_dlms import GXByteBuffer, GXDateTime, GXDLMSClient, GXDLMSException, GXReplyData
from gurux_dlms.enums import Authentication, Conformance, DataType, InterfaceType, Security
from gurux_dlms.GXCiphering import GXCiphering
from gurux_dlms.GXDLMSExceptionResponse import GXDLMSExceptionResponse
from gurux_dlms.objects import GXDLMSData
from gurux_dlms.secure import GXDLMSSecureClient

from adapters.dlms import axdr
from adapters.dlms.cosem import CLOCK, CLOCK_OBIS, PROFILE_GENERIC
from adapters.dlms.cosem_time import encode_datetime
from adapters.dlms.gurux_crypto import install as install_aes_gcm
from adapters.dlms.link import Link
from adapters.dlms.session import (
    AccessDenied,
    AssociationRefused,
    AttributeRef,
    CosemValue,
    CounterRejected,
    Credentials,
    LinkError,
    MeterTarget,
    MissingKeys,
    SessionError,
)
from domain.values import SecurityLevel, Transport

HLS_CLIENT_TITLE_LEN = 8
IC_BLOCK = 32
"""Client invocation counters reserved (persisted) at a time."""
IC_LOW_WATER = 4
MAX_LIST = 10
"""Attributes per GET-with-list request (gurux's own limit)."""


def _quiet(*_args: object, **_kwargs: object) -> None:
    return None


def _silence_gurux() -> None:
    for name, module in list(sys.modules.items()):
        if name.startswith("gurux_dlms") and module is not None:
            module.print = _quiet  # type: ignore[attr-defined]


_original_decrypt = GXCiphering.decrypt


def _observed_decrypt(settings: Any, p: Any, data: Any) -> Any:
    result = _original_decrypt(settings, p, data)
    observer: Callable[[int], None] | None = getattr(settings, "hes_ic_observer", None)
    if observer is not None:
        observer(int(p.invocationCounter))
    return result


GXCiphering.decrypt = staticmethod(_observed_decrypt)  # type: ignore[method-assign,assignment]
_silence_gurux()
install_aes_gcm()


class _Ref:
    """The two attributes gurux's ``readList`` reads from an object."""

    def __init__(self, ref: AttributeRef) -> None:
        self.objectType = ref.class_id
        self.logicalName = ref.obis


def plain(value: Any) -> CosemValue:
    """A gurux value as plain Python: ints, bytes, str, lists, datetimes."""
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, GXByteBuffer):
        return bytes(value.array())
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, GXDateTime):
        return value.value  # type: ignore[no-any-return]
    if isinstance(value, datetime):
        return value
    return str(value)


class GuruxSession:
    """One association with a meter, driven frame by frame."""

    def __init__(
        self, link: Link, client: GXDLMSClient, target: MeterTarget, credentials: Credentials
    ) -> None:
        self._link = link
        self._client = client
        self._target = target
        self._credentials = credentials
        self._ciphered = target.connection.security is SecurityLevel.HLS_GMAC
        self._received_ics: list[int] = []
        self._ic_end = 0
        self._closed = False
        if self._ciphered:
            client.settings.hes_ic_observer = self._received_ics.append

    # -- opening -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, target: MeterTarget, credentials: Credentials, exchange_s: float
    ) -> GuruxSession:
        """Connect, (SNRM/UA for HDLC), AARQ/AARE and, for HLS, the GMAC challenge exchange."""
        c = target.connection
        client = _client(target, credentials)
        link = await Link.connect(c.host, c.port, exchange_s, hdlc=c.transport is Transport.HDLC)
        session = cls(link, client, target, credentials)
        try:
            await session._associate()
        except BaseException:
            await link.close()
            raise
        return session

    async def _associate(self) -> None:
        client = self._client
        if self._ciphered:
            await self._reserve_counters()
        if self._target.connection.transport is Transport.HDLC:
            reply = await self._request([client.snrmRequest()])
            client.parseUAResponse(reply.data)
        try:
            reply = await self._request(client.aarqRequest())
            client.parseAareResponse(reply.data)
            await self._check_counters()
            if client.isAuthenticationRequired:
                await self._reserve_counters()
                reply = await self._request(client.getApplicationAssociationRequest())
                client.parseApplicationAssociationResponse(reply.data)
                await self._check_counters()
        except (GXDLMSException, GXDLMSExceptionResponse, AccessDenied) as exc:
            raise AssociationRefused(
                f"meter {self._target.serial} refused the {self._level()} association: "
                f"{_describe(exc)}"
            ) from None
        except SessionError:
            raise
        except Exception as exc:  # gurux raises bare exceptions for failed HLS checks
            raise AssociationRefused(
                f"meter {self._target.serial} {self._level()} association failed: "
                f"{_describe(exc)} (wrong keys or password?)"
            ) from None

    def _level(self) -> str:
        c = self._target.connection
        return f"{c.security.value} (client {c.client_address})"

    # -- invocation counters -------------------------------------------------------------

    async def _reserve_counters(self) -> None:
        counters = self._credentials.counters
        if counters is None or not self._ciphered:
            return
        cipher = self._client.ciphering
        if self._ic_end - cipher.invocationCounter >= IC_LOW_WATER:
            return
        first = await counters.reserve(IC_BLOCK, cipher.invocationCounter)
        cipher.invocationCounter = first
        self._ic_end = first + IC_BLOCK

    async def _check_counters(self) -> None:
        counters = self._credentials.counters
        if counters is None or not self._received_ics:
            return
        received, self._received_ics[:] = list(self._received_ics), []
        for ic in received:
            await counters.accept_server(ic)

    # -- requests ------------------------------------------------------------------------

    async def _request(self, frames: Sequence[Any] | None) -> GXReplyData:
        reply = GXReplyData()
        for frame in frames or [None]:
            reply.clear()
            await self._round_trip(frame, reply)
            while reply.isMoreData():
                more = None if reply.isStreaming() else self._client.receiverReady(reply)
                await self._round_trip(more, reply)
        return reply

    async def _round_trip(self, frame: Any, reply: GXReplyData) -> None:
        if frame:
            await self._link.send(bytes(frame))
        notify = GXReplyData()
        buffer = GXByteBuffer()
        while True:
            buffer.set(await self._link.receive())
            try:
                if self._client.getData(buffer, reply, notify):
                    break
            except (GXDLMSException, GXDLMSExceptionResponse):
                raise
            except ValueError as exc:
                raise LinkError(
                    f"meter {self._target.serial} sent a frame gurux cannot parse: {_describe(exc)}"
                ) from None
        if reply.error:
            raise AccessDenied(
                f"meter {self._target.serial}: {GXDLMSException.getDescription(reply.error)}"
            )

    async def _call(self, frames: Sequence[Any]) -> GXReplyData:
        if self._ciphered:
            await self._reserve_counters()
        try:
            reply = await self._request(frames)
        except (GXDLMSException, GXDLMSExceptionResponse) as exc:
            raise AccessDenied(f"meter {self._target.serial}: {_describe(exc)}") from None
        if self._ciphered:
            await self._check_counters()
        return reply

    # -- MeterSession --------------------------------------------------------------------

    @property
    def server_system_title(self) -> bytes | None:
        """The meter's system title from the AARE (ciphered sessions)."""
        title = self._client.settings.sourceSystemTitle
        return bytes(title) if title else None

    async def get(self, ref: AttributeRef) -> CosemValue:
        """GET one attribute (block transfer included)."""
        reply = await self._call(self._client._read(ref.obis, ref.class_id, ref.attribute))
        return plain(reply.value)

    async def get_many(self, refs: Sequence[AttributeRef]) -> list[CosemValue | SessionError]:
        """GET-with-list in chunks when negotiated, else one GET per attribute."""
        results: list[CosemValue | SessionError] = []
        if self._client.negotiatedConformance & Conformance.MULTIPLE_REFERENCES == 0:
            for ref in refs:
                try:
                    results.append(await self.get(ref))
                except AccessDenied as exc:
                    results.append(exc)
            return results
        for start in range(0, len(refs), MAX_LIST):
            chunk = refs[start : start + MAX_LIST]
            items = [(_Ref(r), r.attribute) for r in chunk]
            reply = await self._call(self._client.readList(items)[0])
            values = reply.value if isinstance(reply.value, list) else []
            if len(values) != len(chunk):
                raise LinkError(
                    f"meter {self._target.serial} answered {len(values)} of {len(chunk)} "
                    "attributes of a GET-with-list"
                )
            results.extend(plain(v) for v in values)
        return results

    async def get_range(self, obis: str, start: datetime, end: datetime) -> list[list[CosemValue]]:
        """Profile rows by range on the clock column (times sent as UTC, deviation 0)."""
        selector = bytes((1,)) + axdr.encode(
            axdr.structure(
                [
                    axdr.structure(
                        [
                            axdr.u16(CLOCK),
                            axdr.octets(bytes(int(x) for x in CLOCK_OBIS.split("."))),
                            axdr.i8(2),
                            axdr.u16(0),
                        ]
                    ),
                    axdr.octets(encode_datetime(start)),
                    axdr.octets(encode_datetime(end)),
                    axdr.array([]),
                ]
            )
        )
        buffer = GXByteBuffer(selector)
        reply = await self._call(self._client._read(obis, PROFILE_GENERIC, 2, buffer))
        rows = plain(reply.value)
        if rows is None:
            return []
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise LinkError(f"meter {self._target.serial} sent {obis} rows that are not structures")
        return rows  # type: ignore[return-value]

    async def set_datetime(self, ref: AttributeRef, value: datetime) -> None:
        """SET a date-time attribute as an octet-string(12), UTC with deviation 0."""
        item = GXDLMSData(ref.obis)
        item.objectType = ref.class_id
        item.value = encode_datetime(value)
        item.setDataType(ref.attribute, DataType.OCTET_STRING)
        await self._call(self._client.write(item, ref.attribute))

    async def invoke(self, class_id: int, obis: str, method: int, argument: int) -> None:
        """ACTION ``method`` with an integer(8) argument."""
        item = GXDLMSData(obis)
        item.objectType = class_id
        await self._call(self._client.method(item, method, argument, DataType.INT8))

    async def close(self) -> None:
        """RLRQ for wrapper or ciphered sessions, DISC for HDLC; then close the socket."""
        if self._closed:
            return
        self._closed = True
        try:
            hdlc = self._target.connection.transport is Transport.HDLC
            if not hdlc or self._ciphered:
                release = self._client.releaseRequest()
                if release:
                    await self._request(release)
            if hdlc:
                await self._request([self._client.disconnectRequest()])
        except (SessionError, GXDLMSException, GXDLMSExceptionResponse, ValueError):
            pass  # the meter drops the association with the link anyway
        finally:
            await self._link.close()
            counters = self._credentials.counters
            if counters is not None and self._received_ics:
                with contextlib.suppress(CounterRejected):  # closing anyway; not accepted
                    await self._check_counters()


def _client(target: MeterTarget, credentials: Credentials) -> GXDLMSClient:
    c = target.connection
    keys = credentials.keys
    hdlc = c.transport is Transport.HDLC
    server = c.server_address
    if hdlc:
        server = GXDLMSClient.getServerAddress(
            c.server_address, c.physical_address if c.physical_address is not None else 0x11
        )
    interface = InterfaceType.HDLC if hdlc else InterfaceType.WRAPPER
    if c.security is SecurityLevel.HLS_GMAC:
        if keys.ek is None or keys.ak is None:
            raise MissingKeys(f"meter {target.serial} uses HLS-GMAC but no EK/AK are stored")
        if len(credentials.client_system_title) != HLS_CLIENT_TITLE_LEN:
            raise MissingKeys("the head-end's DLMS system title must be 8 bytes")
        client = GXDLMSSecureClient(
            True, c.client_address, server, Authentication.HIGH_GMAC, None, interface
        )
        cipher = client.ciphering
        cipher.security = Security.AUTHENTICATION_ENCRYPTION
        cipher.systemTitle = credentials.client_system_title
        cipher.blockCipherKey = keys.ek
        cipher.authenticationKey = keys.ak
        cipher.invocationCounter = 0
        return client
    if c.security is SecurityLevel.LLS:
        if keys.lls_password is None:
            raise MissingKeys(f"meter {target.serial} uses LLS but no password is stored")
        return GXDLMSClient(
            True, c.client_address, server, Authentication.LOW, keys.lls_password, interface
        )
    return GXDLMSClient(True, c.client_address, server, Authentication.NONE, None, interface)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


class GuruxSessionFactory:
    """Opens ``GuruxSession``s with one timeout per exchange."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def open(self, target: MeterTarget, credentials: Credentials) -> GuruxSession:
        """Connect and associate."""
        return await GuruxSession.open(target, credentials, self.timeout)
