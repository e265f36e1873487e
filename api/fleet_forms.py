"""JSON forms of fleet operations' values shared by GraphQL and REST (camelCase keys)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from domain.errors import FieldError, ValidationFailed
from domain.tou_calendar import TouCalendar


def camel_keys(value: Any) -> Any:
    """The value with every dict key in camelCase (as clients see fields)."""
    if isinstance(value, dict):
        return {_camel_key(k): camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    return value


def _camel_key(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p.title() for p in rest)


def _snake(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            "".join("_" + c.lower() if c.isupper() else c for c in k): _snake(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_snake(v) for v in value]
    return value


def calendar_of(value: Any) -> TouCalendar:
    """A calendar from its JSON form (camelCase keys); ``ValidationFailed`` names the path."""
    try:
        return msgspec.convert(_snake(value), TouCalendar)
    except msgspec.ValidationError as exc:
        text = str(exc)
        path = text.rsplit(" - at `$", 1)[-1].rstrip("`") if " - at `$" in text else ""
        field = "calendar" + re.sub(r"_([a-z])", lambda m: m.group(1).upper(), path)
        raise ValidationFailed([FieldError(field, "shape", text.split(" - at ")[0])]) from None
