"""Text at the door: which characters free text and identifiers may hold.

Every text field a command, an import row or a reading carries is one of two kinds:

* **Free text** (reasons, notes, addresses, firmware and model labels): any Unicode except
  control characters (Unicode category Cc: U+0000-U+001F, U+007F-U+009F) and unpaired
  surrogates, which no UTF-8 store can hold. Multi-line free text (reasons, notes, addresses)
  may hold TAB and LF; one-line labels may not.
* **Identifiers** (serials, customer accounts, concentrator ids, SIM cards, regions, areas):
  only the character sets below, documented in ``docs/api.md``.

Text the head-end records on behalf of someone else (a meter's error, a webhook receiver's
answer) is not refused but made ``printable``: every refused character becomes its escape.
"""

from __future__ import annotations

import re

from domain.errors import Collector

SERIAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SERIAL_RULE = "1..64 letters, digits, '.', '_' or '-', starting alphanumeric"
"""Meter serial numbers (ASCII only)."""
CODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
CODE_RULE = "1..64 letters, digits, '.', '_', ':' or '-', starting alphanumeric"
"""Customer accounts, concentrator ids, SIM cards (ASCII only)."""
NAME_RE = re.compile(r"\w[\w .,'/&()+:-]{0,63}")
NAME_RULE = "1..64 characters (letters, digits, spaces, .,'/&()+:-)"
"""Regions, areas, manufacturers, models: Unicode letters and digits allowed; a letter, digit
or '_' first."""

_MULTI_LINE_REFUSED = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_ONE_LINE_REFUSED = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
MULTI_LINE_RULE = "no control characters but tab and newline"
ONE_LINE_RULE = "one line without control characters"


def refused_character(value: str, *, multiline: bool = False) -> str | None:
    """Where and which character free text may not hold ("U+0000 at position 3"), or None."""
    pattern = _MULTI_LINE_REFUSED if multiline else _ONE_LINE_REFUSED
    found = pattern.search(value)
    if found is None:
        return None
    return f"U+{ord(found.group()):04X} at position {found.start() + 1}"


def check_text(
    errors: Collector,
    field: str,
    value: str,
    *,
    max_chars: int,
    required: bool = True,
    multiline: bool = False,
) -> None:
    """Record the broken rules of free text: its length (1.. or 0..``max_chars``) and characters."""
    if (required and not value.strip()) or len(value) > max_chars:
        least = 1 if required else 0
        errors.add(field, "length", f"{field} must have {least}..{max_chars} characters")
    check_characters(errors, field, value, multiline=multiline)


def check_characters(errors: Collector, field: str, value: str, *, multiline: bool) -> None:
    """Record a broken ``characters`` rule when free text holds a refused character."""
    where = refused_character(value, multiline=multiline)
    if where is not None:
        allowed = MULTI_LINE_RULE if multiline else ONE_LINE_RULE
        errors.add(field, "characters", f"{field} holds {where}: it must be {allowed}")


def check_identifier(
    errors: Collector, field: str, value: str, pattern: re.Pattern[str], described: str
) -> None:
    """Record a broken ``format`` rule unless ``value`` matches ``pattern`` whole."""
    if not pattern.fullmatch(value):
        errors.add(field, "format", f"{field} must be {described}")


def printable(text: str) -> str:
    """``text`` with every control character and unpaired surrogate replaced by its escape."""
    return _ONE_LINE_REFUSED.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
