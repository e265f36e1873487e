"""Comparing what was written to a meter with what it reads back."""

from __future__ import annotations

import msgspec


def differing_fields(written: msgspec.Struct, read: msgspec.Struct, prefix: str = "") -> list[str]:
    """Names (camelCase, dotted) of the fields whose read-back value differs from the written."""
    found: list[str] = []
    for name in written.__struct_fields__:
        mine, theirs = getattr(written, name), getattr(read, name, None)
        label = prefix + _camel(name)
        if mine == theirs:
            continue
        if isinstance(mine, msgspec.Struct) and isinstance(theirs, msgspec.Struct):
            found += differing_fields(mine, theirs, label + ".")
        elif isinstance(mine, tuple) and isinstance(theirs, tuple) and len(mine) == len(theirs):
            for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
                if a == b:
                    continue
                if isinstance(a, msgspec.Struct) and isinstance(b, msgspec.Struct):
                    found += differing_fields(a, b, f"{label}[{i}].")
                else:
                    found.append(f"{label}[{i}]")
        else:
            found.append(label)
    return found


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
