"""Checking that a written value has the DLMS types an attribute or method expects."""

from __future__ import annotations

from dataclasses import dataclass

from adapters.dlms.axdr import Data, Tag

INTEGER_TAGS = frozenset(
    {
        Tag.INTEGER,
        Tag.LONG,
        Tag.DOUBLE_LONG,
        Tag.LONG64,
        Tag.UNSIGNED,
        Tag.LONG_UNSIGNED,
        Tag.DOUBLE_LONG_UNSIGNED,
        Tag.LONG64_UNSIGNED,
    }
)


@dataclass(frozen=True, slots=True)
class Octets:
    """An octet-string, of exactly ``size`` octets when given."""

    size: int | None = None


@dataclass(frozen=True, slots=True)
class ArrayOf:
    """An array whose elements all have one shape."""

    element: Shape


@dataclass(frozen=True, slots=True)
class StructOf:
    """A structure of fields with the given shapes."""

    fields: tuple[Shape, ...]


@dataclass(frozen=True, slots=True)
class AnyInteger:
    """Any integer type (thresholds follow the monitored value's type)."""


Shape = Tag | Octets | ArrayOf | StructOf | AnyInteger


def fits(data: Data, shape: Shape) -> bool:
    """Whether ``data`` has ``shape``."""
    if isinstance(shape, Tag):
        return data.tag is shape
    if isinstance(shape, AnyInteger):
        return data.tag in INTEGER_TAGS
    if isinstance(shape, Octets):
        return data.tag is Tag.OCTET_STRING and (
            shape.size is None or len(data.octets()) == shape.size
        )
    if isinstance(shape, ArrayOf):
        return data.tag is Tag.ARRAY and all(fits(d, shape.element) for d in data.items())
    items = data.items() if data.tag is Tag.STRUCTURE else None
    return (
        items is not None
        and len(items) == len(shape.fields)
        and all(fits(d, s) for d, s in zip(items, shape.fields, strict=True))
    )
