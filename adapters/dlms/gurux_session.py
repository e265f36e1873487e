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
from gurux_dlms.enums import (
    Authentication,
    Command,
    Conformance,
    DataType,
    InterfaceType,
    Security,
    SourceDiagnostic,
)
from gurux_dlms.enums.ExceptionServiceError import ExceptionServiceError
from gurux_dlms.GXCiphering import GXCiphering
from gurux_dlms.GXDLMS import GXDLMS
from gurux_dlms.GXDLMSConfirmedServiceError import GXDLMSConfirmedServiceError
from gurux_dlms.GXDLMSExceptionResponse import GXDLMSExceptionResponse
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.objects import GXDLMSData
from gurux_dlms.secure import GXDLMSSecureClient

from adapters.dlms import axdr
from adapters.dlms.axdr import AxdrError, Data, Tag
from adapters.dlms.cosem import (
    CLOCK,
    CLOCK_OBIS,
    DENIED_RESULTS,
    MISSING_RESULTS,
    PROFILE_GENERIC,
    result_name,
)
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
    DataAccessError,
    LinkError,
    MeterTarget,
    MissingKeys,
    ObjectMissing,
    SessionError,
)
from domain.values import SecurityLevel, Transport

HLS_CLIENT_TITLE_LEN = 8
IC_BLOCK = 32
"""Client invocation counters reserved (persisted) at a time."""
IC_LOW_WATER = 4
MAX_LIST = 10
"""Attributes per GET-with-list request (gurux's own limit)."""
COUNTER_SUSPECT_DIAGNOSTICS = frozenset({SourceDiagnostic.NONE, SourceDiagnostic.NO_REASON_GIVEN})
"""AARE diagnostics of a refused HLS association that may mean our counter was rejected
(an authentication failure or an unknown mechanism or context means something else)."""
DEVIATION_UNSPECIFIED = 0x8000
_CIPHER_OVERHEAD = 1 + 1 + 8 + 3 + 5 + 12
"""general-glo-ciphering around an APDU: tag, title, length, security header, GMAC tag."""
_LINK_ERRORS = {
    -1: "FRMR (unacceptable frame)",
    -2: "a rejection of the frame",
    -3: "RNR (receive not ready)",
    -4: "DM (disconnected mode): the HDLC link is refused",
}
_REPLY_OF = {
    "SET": Command.SET_RESPONSE,
    "ACTION": Command.METHOD_RESPONSE,
}


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
_original_with_list = GXDLMS.handleGetResponseWithList


def _get_response_with_list(cls: Any, settings: Any, reply: Any) -> None:
    """Gurux's GET-response-with-list parsing, except that an empty array is not taken for
    null-data: gurux 1.0.203 skips one byte after every value that parses to None, which
    for an empty array (tag and count already read) lands past the next result."""
    if reply.xml:
        _original_with_list.__func__(cls, settings, reply)  # type: ignore[attr-defined]
        return
    data = reply.data
    count = _GXCommon.getObjectCount(data)
    values: list[Any] = [None] * count
    for pos in range(count):
        if data.getUInt8() != 0:
            reply.error = data.getUInt8()
            continue
        start = data.position
        null = data.getUInt8(start) == DataType.NONE
        reply.readPosition = start
        GXDLMS.getValueFromData(settings, reply)
        if reply.value is None:
            reply.readPosition = start + 1 if null else reply.readPosition
            values[pos] = None if null else []
        else:
            values[pos] = reply.value
        data.position = reply.readPosition
        reply.value = None
    reply.value = values


GXDLMS.handleGetResponseWithList = classmethod(_get_response_with_list)  # type: ignore[method-assign,assignment]
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
        except GXDLMSException as exc:
            diagnostic = getattr(exc, "diagnostic", None)
            raise AssociationRefused(
                f"meter {self._target.serial} refused the {self._level()} association: "
                f"{_describe(exc)}",
                counter_suspect=self._ciphered and diagnostic in COUNTER_SUSPECT_DIAGNOSTICS,
            ) from None
        except GXDLMSExceptionResponse as exc:
            counter = exc.exceptionServiceError == ExceptionServiceError.INVOCATION_COUNTER_ERROR
            raise AssociationRefused(
                f"meter {self._target.serial} refused the {self._level()} association: "
                f"{_describe(exc)}",
                counter_suspect=self._ciphered and counter,
                counter_hint=int(exc.serviceErrorValue or 0) if counter else None,
            ) from None
        except (GXDLMSConfirmedServiceError, DataAccessError) as exc:
            raise AssociationRefused(
                f"meter {self._target.serial} refused the {self._level()} association: "
                f"{_describe(exc)}"
            ) from None
        except SessionError:
            raise
        except Exception as exc:  # gurux raises bare exceptions for failed HLS checks
            hint = (
                " (wrong keys or password?)"
                if self._target.connection.security is not SecurityLevel.NONE
                else " (a malformed AARE)"
            )
            raise AssociationRefused(
                f"meter {self._target.serial} {self._level()} association failed: "
                f"{_describe(exc)}{hint}"
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

    async def _request(self, frames: Sequence[Any] | None, what: str = "") -> GXReplyData:
        reply = GXReplyData()
        for frame in frames or [None]:
            reply.clear()
            await self._round_trip(frame, reply, what)
            while reply.isMoreData():
                more = None if reply.isStreaming() else self._client.receiverReady(reply)
                await self._round_trip(more, reply, what)
        return reply

    async def _round_trip(self, frame: Any, reply: GXReplyData, what: str) -> None:
        if frame:
            await self._link.send(bytes(frame))
        notify = GXReplyData()
        buffer = GXByteBuffer()
        while True:
            buffer.set(await self._link.receive())
            try:
                if self._client.getData(buffer, reply, notify):
                    break
            except (GXDLMSException, GXDLMSExceptionResponse, GXDLMSConfirmedServiceError):
                raise
            except Exception as exc:  # gurux signals malformed input with assorted exceptions
                raise LinkError(
                    f"meter {self._target.serial} sent a reply{_during(what)} that cannot be "
                    f"parsed: {_describe(exc)}"
                ) from None
        if reply.error:
            code = int(reply.error)
            if code < 0:  # HDLC link-level answers gurux reports as negative codes
                raise LinkError(
                    f"meter {self._target.serial}{_during(what, ':')} the meter answered "
                    f"{_LINK_ERRORS.get(code, f'link error {code}')}"
                )
            raise self._result_error(code, what)

    def _result_error(self, code: int, what: str) -> DataAccessError:
        """The error for a Data-Access-Result / Action-Result other than success."""
        name = result_name(code)
        message = f"meter {self._target.serial}{_during(what, ':')} the meter answered {name}"
        if code in DENIED_RESULTS:
            return AccessDenied(message, code, name)
        if code in MISSING_RESULTS:
            return ObjectMissing(message, code, name)
        return DataAccessError(message, code, name)

    async def _call(self, frames: Sequence[Any], what: str) -> GXReplyData:
        if self._ciphered:
            await self._reserve_counters()
        try:
            reply = await self._request(frames, what)
        except (GXDLMSException, GXDLMSExceptionResponse, GXDLMSConfirmedServiceError) as exc:
            raise DataAccessError(
                f"meter {self._target.serial}{_during(what, ':')} the meter refused the "
                f"request: {_describe(exc)}"
            ) from None
        if self._ciphered:
            await self._check_counters()
        return reply

    def _expect(self, reply: GXReplyData, service: str, what: str) -> None:
        """A SET or ACTION is confirmed only by its own response with a success result."""
        expected = _REPLY_OF[service]
        if reply.command != expected:
            raise LinkError(
                f"meter {self._target.serial}{_during(what, ':')} answered the {service} with "
                f"APDU 0x{int(reply.command or 0):02X}, not a {service} response: the outcome "
                "is unknown"
            )

    # -- MeterSession --------------------------------------------------------------------

    @property
    def server_system_title(self) -> bytes | None:
        """The meter's system title from the AARE (ciphered sessions)."""
        title = self._client.settings.sourceSystemTitle
        return bytes(title) if title else None

    async def get(self, ref: AttributeRef) -> CosemValue:
        """GET one attribute (block transfer included)."""
        what = f"GET {_ref(ref)}"
        reply = await self._call(self._client._read(ref.obis, ref.class_id, ref.attribute), what)
        return plain(reply.value)

    async def _get_each(self, refs: Sequence[AttributeRef]) -> list[CosemValue | SessionError]:
        results: list[CosemValue | SessionError] = []
        for ref in refs:
            try:
                results.append(await self.get(ref))
            except DataAccessError as exc:
                results.append(exc)
        return results

    async def get_many(self, refs: Sequence[AttributeRef]) -> list[CosemValue | SessionError]:
        """GET-with-list in chunks when negotiated, else one GET per attribute.

        Gurux keeps only one result code of a GET-with-list answer: a chunk in which any
        attribute failed is read again one GET at a time, so each attribute gets its own.
        """
        per_request = self._list_size()
        if per_request < 2:
            return await self._get_each(refs)
        results: list[CosemValue | SessionError] = []
        for start in range(0, len(refs), per_request):
            chunk = refs[start : start + per_request]
            items = [(_Ref(r), r.attribute) for r in chunk]
            what = f"GET-with-list of {len(chunk)} attributes"
            values: list[Any] = []
            try:
                for message in self._client.readList(items):
                    reply = await self._call(message, what)
                    values.extend(reply.value if isinstance(reply.value, list) else [])
            except DataAccessError:
                results.extend(await self._get_each(chunk))
                continue
            if len(values) != len(chunk):
                raise LinkError(
                    f"meter {self._target.serial} answered {len(values)} of {len(chunk)} "
                    "attributes of a GET-with-list"
                )
            results.extend(plain(v) for v in values)
        return results

    def _list_size(self) -> int:
        """Attributes per GET-with-list that fit the meter's max PDU (0: no with-list).

        Each attribute descriptor takes 10 bytes after a 12-byte header, and ciphering adds
        its own; the count stays below gurux's own float estimate, which it cannot encode.
        """
        if self._client.negotiatedConformance & Conformance.MULTIPLE_REFERENCES == 0:
            return 0
        overhead = 12 + 1 + (_CIPHER_OVERHEAD if self._ciphered else 0)
        return max(0, min(MAX_LIST, (int(self._client.settings.maxPduSize) - overhead) // 10))

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
        what = f"GET {PROFILE_GENERIC}/{obis}/2 by range"
        reply = await self._call(self._client._read(obis, PROFILE_GENERIC, 2, buffer), what)
        rows = plain(reply.value)
        if rows is None:
            return []
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise LinkError(f"meter {self._target.serial} sent {obis} rows that are not structures")
        return rows  # type: ignore[return-value]

    async def set_datetime(
        self, ref: AttributeRef, value: datetime, *, deviation_unspecified: bool = False
    ) -> None:
        """SET a date-time attribute as an octet-string(12), UTC with deviation 0 (or not
        specified); the meter's Data-Access-Result must be success."""
        item = GXDLMSData(ref.obis)
        item.objectType = ref.class_id
        stamp = bytearray(encode_datetime(value))
        if deviation_unspecified:
            stamp[9:11] = DEVIATION_UNSPECIFIED.to_bytes(2, "big")
        item.value = bytes(stamp)
        item.setDataType(ref.attribute, DataType.OCTET_STRING)
        what = f"SET {_ref(ref)}"
        reply = await self._call(self._client.write(item, ref.attribute), what)
        self._expect(reply, "SET", what)

    async def invoke(
        self, class_id: int, obis: str, method: int, argument: int, *, long: bool = False
    ) -> None:
        """ACTION ``method`` with an integer(8) or long argument; the Action-Result must be
        success."""
        item = GXDLMSData(obis)
        item.objectType = class_id
        kind = DataType.INT16 if long else DataType.INT8
        what = f"ACTION {class_id}/{obis} method {method}"
        reply = await self._call(self._client.method(item, method, argument, kind), what)
        self._expect(reply, "ACTION", what)

    async def set(
        self, ref: AttributeRef, value: Data | CosemValue, *, kind: Tag | None = None
    ) -> None:
        """SET an attribute to a typed value; the meter's Data-Access-Result must be success."""
        what = f"SET {_ref(ref)}"
        data = _typed(value, kind, what)
        # Gurux has no public raw SET: its private one, given a structure type and bytes,
        # copies the A-XDR encoding as it is (so every type is sent exactly).
        frames = self._client._GXDLMSClient__write(
            ref.obis, axdr.encode(data), DataType.STRUCTURE, ref.class_id, ref.attribute
        )
        reply = await self._call(frames, what)
        self._expect(reply, "SET", what)

    async def action(
        self, class_id: int, obis: str, method: int, parameter: Data | None = None
    ) -> CosemValue:
        """ACTION ``method`` with a typed parameter; the Action-Result must be success."""
        item = GXDLMSData(obis)
        item.objectType = class_id
        raw = axdr.encode(axdr.NULL if parameter is None else parameter)
        what = f"ACTION {class_id}/{obis} method {method}"
        reply = await self._call(self._client.method(item, method, raw, DataType.STRUCTURE), what)
        self._expect(reply, "ACTION", what)
        return plain(reply.value)

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
            if counters is not None:
                if self._received_ics:
                    with contextlib.suppress(CounterRejected):  # closing anyway; not accepted
                        await self._check_counters()
                await counters.flush()


def _client(target: MeterTarget, credentials: Credentials) -> GXDLMSClient:
    client = _bare_client(target, credentials)
    link = credentials.link
    client.maxReceivePDUSize = link.max_pdu
    if target.connection.transport is Transport.HDLC:
        hdlc = client.hdlcSettings
        hdlc.maxInfoTX = hdlc.maxInfoRX = link.hdlc_max_info
        hdlc.windowSizeTX = hdlc.windowSizeRX = link.hdlc_window
    return client


def _bare_client(target: MeterTarget, credentials: Credentials) -> GXDLMSClient:
    c = target.connection
    if c.client_address is None:
        raise ValueError(f"meter {target.serial}: client address not resolved")
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


def _typed(value: Data | CosemValue, kind: Tag | None, what: str) -> Data:
    if isinstance(value, Data):
        return value
    if kind is None:
        raise ValueError(f"{what}: a plain value needs its DLMS type (kind)")
    try:
        return axdr.typed(value, kind)
    except AxdrError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _ref(ref: AttributeRef) -> str:
    return f"{ref.class_id}/{ref.obis}/{ref.attribute}"


def _during(what: str, tail: str = "") -> str:
    return f" ({what}){tail}" if what else tail


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
