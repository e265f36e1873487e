"""A-XDR encoding of DLMS ``Data`` values and of variable lengths (IEC 61334-6, Green Book)."""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from adapters.dlms.cosem_time import CosemTimeError, encode_datetime

MAX_DEPTH = 16
"""Deepest array/structure nesting accepted when decoding (COSEM needs 3 or 4)."""


class AxdrError(ValueError):
    """Bytes that are not valid A-XDR: truncated, an unknown type tag, an impossible length."""


class Tag(enum.IntEnum):
    """DLMS data type tags."""

    NULL = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOLEAN = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    BCD = 13
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27


_INT_FORMATS: dict[Tag, str] = {
    Tag.DOUBLE_LONG: ">i",
    Tag.DOUBLE_LONG_UNSIGNED: ">I",
    Tag.BCD: ">b",
    Tag.INTEGER: ">b",
    Tag.LONG: ">h",
    Tag.UNSIGNED: ">B",
    Tag.LONG_UNSIGNED: ">H",
    Tag.LONG64: ">q",
    Tag.LONG64_UNSIGNED: ">Q",
    Tag.ENUM: ">B",
}
_FLOAT_FORMATS: dict[Tag, str] = {Tag.FLOAT32: ">f", Tag.FLOAT64: ">d"}
_FIXED_OCTETS: dict[Tag, int] = {Tag.DATE_TIME: 12, Tag.DATE: 5, Tag.TIME: 4}

Value = int | bool | bytes | str | float | tuple["Data", ...] | None


@dataclass(frozen=True, slots=True)
class Data:
    """One DLMS ``Data`` value: its type tag and the Python value.

    Integers and enums hold ``int``; boolean ``bool``; octet strings, date-time, date and
    time ``bytes``; visible and UTF-8 strings ``str``; bit strings a ``str`` of ``0``/``1``;
    floats ``float``; arrays and structures a tuple of ``Data``; null-data ``None``.
    """

    tag: Tag
    value: Value

    def items(self) -> tuple[Data, ...]:
        """The elements of an array or structure."""
        if not isinstance(self.value, tuple):
            raise AxdrError(f"expected array or structure, got {self.tag.name}")
        return self.value

    def integer(self) -> int:
        """The value of an integer or enum type."""
        if self.tag not in _INT_FORMATS or isinstance(self.value, bool | tuple):
            raise AxdrError(f"expected an integer type, got {self.tag.name}")
        assert isinstance(self.value, int)
        return self.value

    def octets(self) -> bytes:
        """The value of an octet-string, date-time, date or time."""
        if not isinstance(self.value, bytes):
            raise AxdrError(f"expected an octet string, got {self.tag.name}")
        return self.value


NULL = Data(Tag.NULL, None)


def u8(v: int) -> Data:
    """An unsigned (8-bit) value."""
    return Data(Tag.UNSIGNED, v)


def u16(v: int) -> Data:
    """A long-unsigned (16-bit) value."""
    return Data(Tag.LONG_UNSIGNED, v)


def u32(v: int) -> Data:
    """A double-long-unsigned (32-bit) value."""
    return Data(Tag.DOUBLE_LONG_UNSIGNED, v)


def i8(v: int) -> Data:
    """An integer (signed 8-bit) value."""
    return Data(Tag.INTEGER, v)


def i16(v: int) -> Data:
    """A long (signed 16-bit) value."""
    return Data(Tag.LONG, v)


def i32(v: int) -> Data:
    """A double-long (signed 32-bit) value."""
    return Data(Tag.DOUBLE_LONG, v)


def enum_(v: int) -> Data:
    """An enum value."""
    return Data(Tag.ENUM, v)


def boolean(v: bool) -> Data:
    """A boolean value."""
    return Data(Tag.BOOLEAN, v)


def octets(v: bytes) -> Data:
    """An octet-string value."""
    return Data(Tag.OCTET_STRING, bytes(v))


def visible(v: str) -> Data:
    """A visible-string value."""
    return Data(Tag.VISIBLE_STRING, v)


def array(items: Sequence[Data]) -> Data:
    """An array of values."""
    return Data(Tag.ARRAY, tuple(items))


def structure(items: Sequence[Data]) -> Data:
    """A structure of values."""
    return Data(Tag.STRUCTURE, tuple(items))


_SCALAR_PYTHON: dict[Tag, tuple[type, ...]] = {
    Tag.BOOLEAN: (bool,),
    Tag.OCTET_STRING: (bytes, bytearray),
    Tag.VISIBLE_STRING: (str,),
    Tag.UTF8_STRING: (str,),
    Tag.BIT_STRING: (str,),
    Tag.FLOAT32: (float, int),
    Tag.FLOAT64: (float, int),
    Tag.DATE_TIME: (bytes, bytearray),
    Tag.DATE: (bytes, bytearray),
    Tag.TIME: (bytes, bytearray),
}


def typed(value: object, kind: Tag) -> Data:
    """``value`` as a DLMS value of type ``kind``, checked so that it encodes exactly.

    Integer and enum types take ``int``; strings ``str``; octet strings, date-time, date and
    time ``bytes`` (an aware ``datetime`` for an octet-string or date-time: 12 octets, UTC,
    deviation 0); bit strings ``0``/``1`` text; arrays and structures a sequence of ``Data``.
    """
    if kind is Tag.NULL:
        if value is not None:
            raise AxdrError(f"null-data takes no value, got {type(value).__name__}")
        return NULL
    if kind in (Tag.ARRAY, Tag.STRUCTURE):
        if not isinstance(value, list | tuple) or not all(isinstance(v, Data) for v in value):
            raise AxdrError(f"{kind.name} needs a sequence of typed values")
        return Data(kind, tuple(value))
    if isinstance(value, datetime) and kind in (Tag.OCTET_STRING, Tag.DATE_TIME):
        try:
            return Data(kind, encode_datetime(value))
        except CosemTimeError as exc:
            raise AxdrError(str(exc)) from None
    if kind in _INT_FORMATS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AxdrError(f"{kind.name} needs an integer, got {type(value).__name__}")
        data = Data(kind, int(value))
    else:
        wanted = _SCALAR_PYTHON[kind]
        if not isinstance(value, wanted) or (kind in _FLOAT_FORMATS and isinstance(value, bool)):
            raise AxdrError(f"{kind.name} cannot hold a {type(value).__name__}")
        if kind is Tag.BIT_STRING and set(str(value)) - {"0", "1"}:
            raise AxdrError("a bit-string is given as text of 0 and 1")
        plain = bytes(value) if isinstance(value, bytearray) else value
        data = Data(kind, float(plain) if kind in _FLOAT_FORMATS else plain)  # type: ignore[arg-type]
    encode(data)  # raises AxdrError when the value does not fit the type
    return data


def encode_length(n: int) -> bytes:
    """A-XDR length: one byte below 128, else 0x8N and N big-endian bytes."""
    if n < 0:
        raise AxdrError(f"negative length {n}")
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def decode_length(buf: bytes, pos: int) -> tuple[int, int]:
    """Read an A-XDR length at ``pos``; return (length, position after it)."""
    if pos >= len(buf):
        raise AxdrError("truncated: length expected")
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if count == 0 or count > 4:
        raise AxdrError(f"length of {count} bytes is not supported")
    end = pos + 1 + count
    if end > len(buf):
        raise AxdrError("truncated: long-form length")
    return int.from_bytes(buf[pos + 1 : end], "big"), end


def encode(data: Data) -> bytes:
    """Encode one value with its type tag."""
    out = bytearray()
    _encode_into(data, out)
    return bytes(out)


def _encode_into(data: Data, out: bytearray) -> None:
    tag, value = data.tag, data.value
    out.append(tag)
    if tag is Tag.NULL:
        return
    if tag in (Tag.ARRAY, Tag.STRUCTURE):
        items = data.items()
        out += encode_length(len(items))
        for item in items:
            _encode_into(item, out)
    elif tag is Tag.BOOLEAN:
        out.append(0xFF if value else 0x00)
    elif tag in _INT_FORMATS:
        try:
            out += struct.pack(_INT_FORMATS[tag], data.integer())
        except struct.error as exc:
            raise AxdrError(f"{value!r} does not fit {tag.name}") from exc
    elif tag in _FLOAT_FORMATS:
        assert isinstance(value, float | int)
        out += struct.pack(_FLOAT_FORMATS[tag], float(value))
    elif tag in _FIXED_OCTETS:
        raw = data.octets()
        if len(raw) != _FIXED_OCTETS[tag]:
            raise AxdrError(f"{tag.name} needs {_FIXED_OCTETS[tag]} bytes, got {len(raw)}")
        out += raw
    elif tag is Tag.OCTET_STRING:
        raw = data.octets()
        out += encode_length(len(raw)) + raw
    elif tag in (Tag.VISIBLE_STRING, Tag.UTF8_STRING):
        assert isinstance(value, str)
        raw = value.encode("ascii" if tag is Tag.VISIBLE_STRING else "utf-8")
        out += encode_length(len(raw)) + raw
    elif tag is Tag.BIT_STRING:
        assert isinstance(value, str)
        bits = value
        out += encode_length(len(bits))
        padded = bits + "0" * (-len(bits) % 8)
        out += int(padded, 2).to_bytes(len(padded) // 8, "big") if padded else b""
    else:  # pragma: no cover - every Tag member is handled above
        raise AxdrError(f"cannot encode {tag!r}")


def decode(buf: bytes, pos: int = 0) -> tuple[Data, int]:
    """Decode one value at ``pos``; return it and the position after it."""
    return _decode(buf, pos, 0)


def decode_all(buf: bytes) -> Data:
    """Decode exactly one value that fills ``buf``."""
    data, end = _decode(buf, 0, 0)
    if end != len(buf):
        raise AxdrError(f"{len(buf) - end} bytes left after the value")
    return data


def _take(buf: bytes, pos: int, n: int, what: str) -> bytes:
    if pos + n > len(buf):
        raise AxdrError(f"truncated: {what} needs {n} bytes, {len(buf) - pos} left")
    return buf[pos : pos + n]


def _decode(buf: bytes, pos: int, depth: int) -> tuple[Data, int]:
    if depth > MAX_DEPTH:
        raise AxdrError(f"nesting deeper than {MAX_DEPTH}")
    raw_tag = _take(buf, pos, 1, "type tag")[0]
    try:
        tag = Tag(raw_tag)
    except ValueError:
        raise AxdrError(f"unknown data type tag {raw_tag}") from None
    pos += 1
    if tag is Tag.NULL:
        return NULL, pos
    if tag in (Tag.ARRAY, Tag.STRUCTURE):
        count, pos = decode_length(buf, pos)
        if count > len(buf) - pos:  # every element takes at least one byte
            raise AxdrError(f"{tag.name} of {count} elements cannot fit in {len(buf) - pos} bytes")
        items = []
        for _ in range(count):
            item, pos = _decode(buf, pos, depth + 1)
            items.append(item)
        return Data(tag, tuple(items)), pos
    if tag is Tag.BOOLEAN:
        return Data(tag, _take(buf, pos, 1, "boolean")[0] != 0), pos + 1
    if tag in _INT_FORMATS:
        fmt = _INT_FORMATS[tag]
        size = struct.calcsize(fmt)
        (num,) = struct.unpack(fmt, _take(buf, pos, size, tag.name))
        return Data(tag, int(num)), pos + size
    if tag in _FLOAT_FORMATS:
        fmt = _FLOAT_FORMATS[tag]
        size = struct.calcsize(fmt)
        (flt,) = struct.unpack(fmt, _take(buf, pos, size, tag.name))
        return Data(tag, float(flt)), pos + size
    if tag in _FIXED_OCTETS:
        size = _FIXED_OCTETS[tag]
        return Data(tag, bytes(_take(buf, pos, size, tag.name))), pos + size
    if tag is Tag.BIT_STRING:
        nbits, pos = decode_length(buf, pos)
        nbytes = (nbits + 7) // 8
        raw = _take(buf, pos, nbytes, "bit-string")
        bits = "".join(f"{b:08b}" for b in raw)[:nbits]
        return Data(tag, bits), pos + nbytes
    length, pos = decode_length(buf, pos)
    raw = bytes(_take(buf, pos, length, tag.name))
    if tag is Tag.OCTET_STRING:
        return Data(tag, raw), pos + length
    try:
        text = raw.decode("ascii" if tag is Tag.VISIBLE_STRING else "utf-8")
    except UnicodeDecodeError as exc:
        raise AxdrError(f"{tag.name} is not valid text") from exc
    return Data(tag, text), pos + length
