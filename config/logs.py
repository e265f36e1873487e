"""Structured logging: one JSON object per line, with correlation ids; secrets scrubbed.

The correlation id of the request being served lives in a context variable that the API's
correlation middleware sets; every record logged while serving it carries the id. A filter
replaces anything shaped like a bearer token, an API key or a URL password before a record is
formatted, as a last line of defence (code must not log secrets in the first place).
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec

CORRELATION_ID: ContextVar[str | None] = ContextVar("hes_correlation_id", default=None)

_SECRETS = (
    # JWTs (three base64url parts, the first one a JSON header: "eyJ")
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), "<redacted-jwt>"),
    # API keys: keep the public prefix, drop the secret
    (re.compile(r"\b(hes_[a-z0-9]{10})_[A-Za-z0-9_-]{20,}"), r"\1_<redacted>"),
    # Bearer/ApiKey credentials of any other shape
    (re.compile(r"(?i)\b(bearer|apikey)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 <redacted>"),
    # passwords in URLs: scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]+@"), r"\1:<redacted>@"),
)

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged too.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message"}  # uvicorn's ANSI-coloured copy of the message
)


def scrub(text: str) -> str:
    """``text`` with token-, key- and password-shaped parts replaced."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class ScrubSecrets(logging.Filter):
    """Replaces secret-shaped text in a record's message and arguments (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message once, scrub it, and keep the record."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the caller's bug; keep the raw text
            message = str(record.msg)
        record.msg = scrub(message)
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, correlation id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        """Encode the record as a JSON line."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        correlation = CORRELATION_ID.get()
        if correlation is not None:
            entry["correlation_id"] = correlation
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                if isinstance(value, bool | int | float) or value is None:
                    entry[key] = value
                else:
                    entry[key] = scrub(str(value))
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        return msgspec.json.encode(entry).decode()


class TextFormatter(logging.Formatter):
    """The classic one-line format, with the correlation id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Format the record and append ``[correlation id]``."""
        text = super().format(record)
        correlation = CORRELATION_ID.get()
        return f"{text} [{correlation}]" if correlation else text


class CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to whatever ``sys.stderr`` is when a record comes, not when built.

    A command run in-process (a CLI test runner, an embedding program) may swap ``sys.stderr``
    for a stream it closes afterwards; a handler bound to that stream would fail on every later
    record.
    """

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        """The process's standard error at this moment."""
        return sys.stderr


def configure(level: str, fmt: str = "json") -> None:
    """Log to stderr at ``level`` in ``fmt`` (json or text), scrubbing secrets from every record."""
    handler = CurrentStderr()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ScrubSecrets())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
