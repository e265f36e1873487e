"""xDLMS APDUs the simulated meter parses and builds (Green Book 9.5, A-XDR encoded)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from adapters.dlms import axdr
from adapters.dlms.axdr import AxdrError, Data

GET_REQUEST, SET_REQUEST, ACTION_REQUEST = 0xC0, 0xC1, 0xC3
GET_RESPONSE, SET_RESPONSE, ACTION_RESPONSE = 0xC4, 0xC5, 0xC7
INITIATE_REQUEST, INITIATE_RESPONSE = 0x01, 0x08
CONFIRMED_SERVICE_ERROR, EXCEPTION_RESPONSE, DATA_NOTIFICATION = 0x0E, 0xD8, 0x0F
DLMS_VERSION = 6
LN_VAA_NAME = 0x0007


class ApduError(ValueError):
    """A request APDU that is malformed; the message names what is wrong."""


class UnsupportedService(ApduError):
    """A well-formed request for a service variant the simulated meter does not implement."""


class DataAccessResult(enum.IntEnum):
    """Result of GET/SET per attribute, and (same numbers) of ACTION."""

    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_GET_ABORTED = 15
    NO_LONG_GET_IN_PROGRESS = 16
    LONG_SET_ABORTED = 17
    NO_LONG_SET_IN_PROGRESS = 18
    DATA_BLOCK_NUMBER_INVALID = 19
    OTHER_REASON = 250


class StateError(enum.IntEnum):
    """Exception-response state-error."""

    SERVICE_NOT_ALLOWED = 1
    SERVICE_UNKNOWN = 2


class ServiceError(enum.IntEnum):
    """Exception-response service-error."""

    OPERATION_NOT_POSSIBLE = 1
    SERVICE_NOT_SUPPORTED = 2
    OTHER_REASON = 3
    PDU_TOO_LONG = 4
    DECIPHERING_ERROR = 5
    INVOCATION_COUNTER_ERROR = 6


class Conformance(enum.IntFlag):
    """xDLMS conformance block bits (bit 0 is the most significant of 24)."""

    GENERAL_PROTECTION = 1 << 22
    GENERAL_BLOCK_TRANSFER = 1 << 21
    READ = 1 << 20
    WRITE = 1 << 19
    UNCONFIRMED_WRITE = 1 << 18
    ATTRIBUTE0_SET = 1 << 15
    PRIORITY_MGMT = 1 << 14
    ATTRIBUTE0_GET = 1 << 13
    BLOCK_TRANSFER_GET = 1 << 12
    BLOCK_TRANSFER_SET = 1 << 11
    BLOCK_TRANSFER_ACTION = 1 << 10
    MULTIPLE_REFERENCES = 1 << 9
    INFORMATION_REPORT = 1 << 8
    DATA_NOTIFICATION = 1 << 7
    ACCESS = 1 << 6
    PARAMETERIZED_ACCESS = 1 << 5
    GET = 1 << 4
    SET = 1 << 3
    SELECTIVE_ACCESS = 1 << 2
    EVENT_NOTIFICATION = 1 << 1
    ACTION = 1 << 0


@dataclass(frozen=True, slots=True)
class InitiateRequest:
    """xDLMS InitiateRequest carried in the AARQ user-information."""

    dedicated_key: bytes | None
    dlms_version: int
    conformance: int
    max_receive_pdu: int


def _need(buf: bytes, pos: int, n: int, what: str) -> None:
    if pos + n > len(buf):
        raise ApduError(f"truncated APDU: {what} needs {n} bytes at offset {pos}")


def parse_initiate_request(buf: bytes) -> InitiateRequest:
    """Parse an InitiateRequest (tag 0x01)."""
    _need(buf, 0, 1, "tag")
    if buf[0] != INITIATE_REQUEST:
        raise ApduError(f"expected InitiateRequest (0x01), got 0x{buf[0]:02X}")
    pos = 1
    dedicated_key = None
    _need(buf, pos, 1, "dedicated-key flag")
    if buf[pos]:
        _need(buf, pos + 1, 1, "dedicated-key length")
        size = buf[pos + 1]
        _need(buf, pos + 2, size, "dedicated-key")
        dedicated_key = bytes(buf[pos + 2 : pos + 2 + size])
        pos += 2 + size
    else:
        pos += 1
    for what in ("response-allowed", "proposed-quality-of-service"):
        _need(buf, pos, 1, what)
        pos += 2 if buf[pos] else 1
    _need(buf, pos, 1 + 7 + 2, "version, conformance and max PDU size")
    version = buf[pos]
    if buf[pos + 1 : pos + 4] != b"\x5f\x1f\x04":
        raise ApduError("InitiateRequest conformance block must start 5F 1F 04")
    conformance = int.from_bytes(buf[pos + 5 : pos + 8], "big")
    max_pdu = int.from_bytes(buf[pos + 8 : pos + 10], "big")
    if pos + 10 != len(buf):
        raise ApduError(f"{len(buf) - pos - 10} bytes after the InitiateRequest")
    return InitiateRequest(dedicated_key, version, conformance, max_pdu)


def initiate_response(conformance: int, max_receive_pdu: int) -> bytes:
    """InitiateResponse (tag 0x08) with the negotiated conformance and our max PDU size."""
    return (
        bytes((INITIATE_RESPONSE, 0x00, DLMS_VERSION, 0x5F, 0x1F, 0x04, 0x00))
        + conformance.to_bytes(3, "big")
        + max_receive_pdu.to_bytes(2, "big")
        + LN_VAA_NAME.to_bytes(2, "big")
    )


class InitiateError(enum.IntEnum):
    """ConfirmedServiceError initiate-error codes."""

    OTHER = 0
    DLMS_VERSION_TOO_LOW = 1
    INCOMPATIBLE_CONFORMANCE = 2
    PDU_SIZE_TOO_SHORT = 3
    REFUSED_BY_VDE_HANDLER = 4


def initiate_error(error: InitiateError) -> bytes:
    """ConfirmedServiceError: initiateError, service-error initiate."""
    return bytes((CONFIRMED_SERVICE_ERROR, 0x01, 0x06, error))


@dataclass(frozen=True, slots=True)
class Selection:
    """Selective access: selector and its parameters."""

    selector: int
    parameters: Data


@dataclass(frozen=True, slots=True)
class Reference:
    """A COSEM attribute or method reference: class id, logical name, index."""

    class_id: int
    obis: bytes
    index: int
    selection: Selection | None = None


@dataclass(frozen=True, slots=True)
class GetRequest:
    """GET-request normal (one item), next (block number) or with-list (several items)."""

    kind: int
    invoke: int
    items: tuple[Reference, ...] = ()
    block_number: int = 0


@dataclass(frozen=True, slots=True)
class SetRequest:
    """SET-request normal."""

    invoke: int
    target: Reference
    value: Data


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """ACTION-request normal."""

    invoke: int
    target: Reference
    parameters: Data | None


@dataclass(frozen=True, slots=True)
class BlockRequest:
    """One block of a SET or ACTION whose value or parameters span several APDUs
    (SET-request with-first-datablock / with-datablock, ACTION-request with-first-pblock /
    with-pblock): ``target`` is given in the first block only."""

    service: int
    invoke: int
    target: Reference | None
    last: bool
    number: int
    raw: bytes


Request = GetRequest | SetRequest | ActionRequest | BlockRequest


def _reference(buf: bytes, pos: int, *, selective: bool) -> tuple[Reference, int]:
    _need(buf, pos, 9, "attribute descriptor")
    class_id = int.from_bytes(buf[pos : pos + 2], "big")
    obis = bytes(buf[pos + 2 : pos + 8])
    index = int.from_bytes(buf[pos + 8 : pos + 9], "big", signed=True)
    pos += 9
    selection = None
    if selective:
        _need(buf, pos, 1, "access-selection flag")
        if buf[pos]:
            _need(buf, pos + 1, 1, "access selector")
            selector = buf[pos + 1]
            parameters, pos = axdr.decode(buf, pos + 2)
            selection = Selection(selector, parameters)
        else:
            pos += 1
    return Reference(class_id, obis, index, selection), pos


def _end(buf: bytes, pos: int) -> None:
    if pos != len(buf):
        raise ApduError(f"{len(buf) - pos} unexpected bytes at the end of the request")


def _data_block(buf: bytes, pos: int) -> tuple[bool, int, bytes]:
    """DataBlock-SA: last-block, block-number, raw-data (to the end of the request)."""
    _need(buf, pos, 5, "last-block and block-number")
    last, number = buf[pos] != 0, int.from_bytes(buf[pos + 1 : pos + 5], "big")
    size, pos = axdr.decode_length(buf, pos + 5)
    _need(buf, pos, size, "raw-data")
    _end(buf, pos + size)
    return last, number, bytes(buf[pos : pos + size])


def parse_request(buf: bytes) -> Request:
    """Parse a GET, SET or ACTION request; raise ``ApduError`` / ``UnsupportedService``."""
    try:
        return _parse_request(buf)
    except AxdrError as exc:
        raise ApduError(f"malformed data in request: {exc}") from None


def _parse_request(buf: bytes) -> Request:
    _need(buf, 0, 3, "tag, request type and invoke-id")
    tag, kind, invoke = buf[0], buf[1], buf[2]
    if tag == GET_REQUEST:
        if kind == 1:
            ref, pos = _reference(buf, 3, selective=True)
            _end(buf, pos)
            return GetRequest(1, invoke, (ref,))
        if kind == 2:
            _need(buf, 3, 4, "block number")
            _end(buf, 7)
            return GetRequest(2, invoke, block_number=int.from_bytes(buf[3:7], "big"))
        if kind == 3:
            count, pos = axdr.decode_length(buf, 3)
            if count == 0 or count > 64:
                raise ApduError(f"GET-request-with-list of {count} items (1..64 accepted)")
            items = []
            for _ in range(count):
                ref, pos = _reference(buf, pos, selective=True)
                items.append(ref)
            _end(buf, pos)
            return GetRequest(3, invoke, tuple(items))
        raise UnsupportedService(f"GET-request type {kind} is not supported")
    if tag == SET_REQUEST:
        if kind in (2, 3):
            target = None
            pos = 3
            if kind == 2:
                target, pos = _reference(buf, 3, selective=True)
            last, number, raw = _data_block(buf, pos)
            return BlockRequest(tag, invoke, target, last, number, raw)
        if kind != 1:
            raise UnsupportedService(f"SET-request type {kind} is not supported")
        ref, pos = _reference(buf, 3, selective=True)
        value, pos = axdr.decode(buf, pos)
        _end(buf, pos)
        return SetRequest(invoke, ref, value)
    if tag == ACTION_REQUEST:
        if kind in (4, 6):
            target = None
            pos = 3
            if kind == 4:
                target, pos = _reference(buf, 3, selective=False)
            last, number, raw = _data_block(buf, pos)
            return BlockRequest(tag, invoke, target, last, number, raw)
        if kind != 1:
            raise UnsupportedService(f"ACTION-request type {kind} is not supported")
        ref, pos = _reference(buf, 3, selective=False)
        _need(buf, pos, 1, "method-invocation-parameters flag")
        parameters = None
        if buf[pos]:
            parameters, pos = axdr.decode(buf, pos + 1)
        else:
            pos += 1
        _end(buf, pos)
        return ActionRequest(invoke, ref, parameters)
    raise UnsupportedService(f"APDU tag 0x{tag:02X} is not a supported request")


GetResult = Data | DataAccessResult


def _get_data_result(result: GetResult) -> bytes:
    if isinstance(result, DataAccessResult):
        return bytes((0x01, result))
    return b"\x00" + axdr.encode(result)


def get_response_normal(invoke: int, result: GetResult) -> bytes:
    """GET-response-normal with data or a data-access-result."""
    return bytes((GET_RESPONSE, 0x01, invoke)) + _get_data_result(result)


def get_response_normal_raw(invoke: int, encoded: bytes) -> bytes:
    """GET-response-normal whose data is already A-XDR encoded."""
    return bytes((GET_RESPONSE, 0x01, invoke, 0x00)) + encoded


def get_response_block(invoke: int, *, last: bool, block: int, raw: bytes) -> bytes:
    """GET-response-with-datablock carrying raw-data."""
    return (
        bytes((GET_RESPONSE, 0x02, invoke, 0x01 if last else 0x00))
        + block.to_bytes(4, "big")
        + b"\x00"
        + axdr.encode_length(len(raw))
        + raw
    )


def get_response_block_error(invoke: int, block: int, error: DataAccessResult) -> bytes:
    """GET-response-with-datablock (last) carrying a data-access-result."""
    return (
        bytes((GET_RESPONSE, 0x02, invoke, 0x01)) + block.to_bytes(4, "big") + bytes((0x01, error))
    )


def get_response_with_list(invoke: int, results: list[GetResult]) -> bytes:
    """GET-response-with-list."""
    body = b"".join(_get_data_result(r) for r in results)
    return bytes((GET_RESPONSE, 0x03, invoke)) + axdr.encode_length(len(results)) + body


def set_response_normal(invoke: int, result: DataAccessResult) -> bytes:
    """SET-response-normal."""
    return bytes((SET_RESPONSE, 0x01, invoke, result))


def set_response_datablock(invoke: int, number: int) -> bytes:
    """SET-response-datablock: block ``number`` received, send the next."""
    return bytes((SET_RESPONSE, 0x02, invoke)) + number.to_bytes(4, "big")


def set_response_last_datablock(invoke: int, result: DataAccessResult, number: int) -> bytes:
    """SET-response-last-datablock: the result of a SET whose value came in blocks."""
    return bytes((SET_RESPONSE, 0x03, invoke, result)) + number.to_bytes(4, "big")


def action_response_next_pblock(invoke: int, number: int) -> bytes:
    """ACTION-response-next-pblock: parameter block ``number`` received, send the next."""
    return bytes((ACTION_RESPONSE, 0x04, invoke)) + number.to_bytes(4, "big")


def action_response_normal(invoke: int, result: DataAccessResult, data: Data | None) -> bytes:
    """ACTION-response-normal, with return parameters when ``data`` is given."""
    head = bytes((ACTION_RESPONSE, 0x01, invoke, result))
    if data is None:
        return head + b"\x00"
    return head + b"\x01\x00" + axdr.encode(data)


def exception_response(
    state: StateError, service: ServiceError, invocation_counter: int | None = None
) -> bytes:
    """Exception-response; invocation-counter-error carries the least acceptable counter."""
    out = bytes((EXCEPTION_RESPONSE, state, service))
    if service is ServiceError.INVOCATION_COUNTER_ERROR:
        out += (invocation_counter or 0).to_bytes(4, "big")
    return out


def data_notification(long_invoke_id: int, date_time: bytes, body: Data) -> bytes:
    """DATA-NOTIFICATION: long-invoke-id-and-priority, date-time octet string, body."""
    return (
        bytes((DATA_NOTIFICATION,))
        + (long_invoke_id & 0x00FF_FFFF).to_bytes(4, "big")
        + axdr.encode_length(len(date_time))
        + date_time
        + axdr.encode(body)
    )
