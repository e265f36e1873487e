"""The header row of an import CSV: canonical column names, duplicates, missing and unknown ones."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec


class Header(msgspec.Struct, frozen=True, kw_only=True):
    """A header row read against a template: names by position, what is wrong with it."""

    names: list[str]
    """Canonical name of each column, ``""`` for an unknown one."""
    problems: list[tuple[str, str]]
    """(column, reason) for each duplicated or missing column."""
    unknown: list[str]
    """Each unknown column, quoted, or by position when it has no name."""


def read_header(cells: list[str], canonical: Mapping[str, str], required: Iterable[str]) -> Header:
    """Header cells mapped to canonical names (case-insensitive), with what breaks the template."""
    names: list[str] = []
    unknown: list[str] = []
    problems: list[tuple[str, str]] = []
    for position, cell in enumerate(cells, start=1):
        raw = cell.strip()
        name = canonical.get(raw.casefold())
        if name is None:
            unknown.append(repr(raw) if raw else f"column {position} (no name)")
        elif name in names:
            problems.append((name, f"column {name} appears more than once"))
        names.append(name or "")
    problems.extend(
        (column, f"missing column {column}") for column in required if column not in names
    )
    return Header(names=names, problems=problems, unknown=unknown)
