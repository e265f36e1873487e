"""ACSE APDUs (BER): parse AARQ and RLRQ, build AARE and RLRE (Green Book 9.4, 11)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

AARQ, AARE, RLRQ, RLRE = 0x60, 0x61, 0x62, 0x63
_APP_CONTEXT_OID = bytes.fromhex("6085740508") + b"\x01"
_MECHANISM_OID = bytes.fromhex("6085740508") + b"\x02"


class AcseError(ValueError):
    """An ACSE APDU that is not valid BER or misses a required field."""


class AppContext(enum.IntEnum):
    """Application context names (last arc of 2.16.756.5.8.1)."""

    LN = 1
    SN = 2
    LN_CIPHERED = 3
    SN_CIPHERED = 4


class Mechanism(enum.IntEnum):
    """Authentication mechanism names (last arc of 2.16.756.5.8.2)."""

    NONE = 0
    LLS = 1
    HLS = 2
    HLS_MD5 = 3
    HLS_SHA1 = 4
    HLS_GMAC = 5
    HLS_SHA256 = 6
    HLS_ECDSA = 7


class Diagnostic(enum.IntEnum):
    """acse-service-user diagnostics used in the AARE."""

    NULL = 0
    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NAME_NOT_SUPPORTED = 2
    MECHANISM_NAME_NOT_RECOGNISED = 11
    MECHANISM_NAME_REQUIRED = 12
    AUTHENTICATION_FAILURE = 13
    AUTHENTICATION_REQUIRED = 14


class Result(enum.IntEnum):
    """Association result."""

    ACCEPTED = 0
    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


def _length(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise AcseError("truncated BER length")
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if not 1 <= count <= 2 or pos + 1 + count > len(buf):
        raise AcseError("unsupported or truncated BER long-form length")
    return int.from_bytes(buf[pos + 1 : pos + 1 + count], "big"), pos + 1 + count


def _tlv_items(buf: bytes) -> dict[int, bytes]:
    items: dict[int, bytes] = {}
    pos = 0
    while pos < len(buf):
        tag = buf[pos]
        length, pos = _length(buf, pos + 1)
        if pos + length > len(buf):
            raise AcseError(f"BER element 0x{tag:02X} runs past the end of the APDU")
        items[tag] = bytes(buf[pos : pos + length])
        pos += length
    return items


def _outer(buf: bytes, tag: int, name: str) -> dict[int, bytes]:
    if not buf or buf[0] != tag:
        raise AcseError(f"not an {name} (tag 0x{tag:02X})")
    length, pos = _length(buf, 1)
    if pos + length != len(buf):
        raise AcseError(f"{name} length {length} does not match its {len(buf) - pos} bytes")
    return _tlv_items(buf[pos:])


def _ber(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    if n < 0x100:
        return bytes((tag, 0x81, n)) + content
    return bytes((tag, 0x82)) + n.to_bytes(2, "big") + content


def _octet_string_in(value: bytes, what: str) -> bytes:
    if not value or value[0] != 0x04:
        raise AcseError(f"{what} must hold an OCTET STRING")
    length, pos = _length(value, 1)
    if pos + length != len(value):
        raise AcseError(f"{what}: OCTET STRING length mismatch")
    return value[pos:]


@dataclass(frozen=True, slots=True)
class Aarq:
    """The AARQ fields the simulated meter uses."""

    context: int
    mechanism: int
    calling_title: bytes | None
    authentication_value: bytes | None
    user_information: bytes | None


def parse_aarq(buf: bytes) -> Aarq:
    """Parse an AARQ; unknown optional fields are ignored."""
    items = _outer(buf, AARQ, "AARQ")
    ctx = items.get(0xA1)
    if ctx is None or len(ctx) != 9 or ctx[:2] != b"\x06\x07" or ctx[2:8] != _APP_CONTEXT_OID:
        raise AcseError("AARQ application-context-name missing or not a DLMS context")
    mechanism: int = Mechanism.NONE
    if 0x8B in items:
        mech = items[0x8B]
        if len(mech) != 7 or mech[:6] != _MECHANISM_OID:
            raise AcseError("AARQ mechanism-name is not a DLMS mechanism")
        mechanism = mech[6]
    calling_title = None
    if 0xA6 in items:
        calling_title = _octet_string_in(items[0xA6], "calling-AP-title")
    auth_value = None
    if 0xAC in items:
        value = items[0xAC]
        if not value or value[0] not in (0x80, 0x81):
            raise AcseError("calling-authentication-value must be a charstring or bitstring")
        length, pos = _length(value, 1)
        auth_value = value[pos : pos + length]
        if len(auth_value) != length:
            raise AcseError("calling-authentication-value length mismatch")
    user_info = None
    if 0xBE in items:
        user_info = _octet_string_in(items[0xBE], "user-information")
    return Aarq(ctx[8], mechanism, calling_title, auth_value, user_info)


def aare(
    *,
    context: int,
    result: Result,
    diagnostic: Diagnostic,
    system_title: bytes | None = None,
    mechanism: int = Mechanism.NONE,
    challenge: bytes | None = None,
    user_information: bytes | None = None,
) -> bytes:
    """Build an AARE."""
    body = _ber(0xA1, b"\x06\x07" + _APP_CONTEXT_OID + bytes((context,)))
    body += _ber(0xA2, bytes((0x02, 0x01, result)))
    body += _ber(0xA3, _ber(0xA1, bytes((0x02, 0x01, diagnostic))))
    if system_title is not None:
        body += _ber(0xA4, _ber(0x04, system_title))
    if mechanism != Mechanism.NONE:
        body += _ber(0x88, b"\x07\x80")
        body += _ber(0x89, _MECHANISM_OID + bytes((mechanism,)))
    if challenge is not None:
        body += _ber(0xAA, _ber(0x80, challenge))
    if user_information is not None:
        body += _ber(0xBE, _ber(0x04, user_information))
    return _ber(AARE, body)


@dataclass(frozen=True, slots=True)
class Rlrq:
    """RLRQ: reason and optional user-information (a possibly ciphered InitiateRequest)."""

    reason: int | None
    user_information: bytes | None


def parse_rlrq(buf: bytes) -> Rlrq:
    """Parse an RLRQ."""
    items = _outer(buf, RLRQ, "RLRQ")
    reason = items[0x80][0] if items.get(0x80) else None
    user_info = _octet_string_in(items[0xBE], "user-information") if 0xBE in items else None
    return Rlrq(reason, user_info)


def rlre(user_information: bytes | None = None) -> bytes:
    """Build an RLRE with reason normal."""
    body = _ber(0x80, b"\x00")
    if user_information is not None:
        body += _ber(0xBE, _ber(0x04, user_information))
    return _ber(RLRE, body)
