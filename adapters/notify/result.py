"""What one delivery attempt over any channel came back with."""

from __future__ import annotations

import msgspec

from domain.notifications import Verdict
from domain.text import printable

MAX_DETAIL = 500


class SendResult(msgspec.Struct, frozen=True, kw_only=True):
    """Verdict, HTTP status or SMTP reply code (None: no answer), a short detail, duration."""

    verdict: Verdict
    status_code: int | None
    detail: str
    duration_ms: float


def short(text: str) -> str:
    """``text`` on one printable line (a receiver's reply may hold NUL), cut to ``MAX_DETAIL``."""
    flat = printable(" ".join(text.split()))
    return flat if len(flat) <= MAX_DETAIL else flat[: MAX_DETAIL - 1] + "…"
