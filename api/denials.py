"""Every refused attempt is logged (structured) and counted, without caller-supplied data."""

from __future__ import annotations

import enum
import logging

from adapters.metrics import ACCESS_DENIED

log = logging.getLogger("hes.access")


class Reason(enum.StrEnum):
    """Why a request was refused (a metrics label: a fixed set)."""

    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NO_RULE = "no_rule"
    CONFIRMATION_REQUIRED = "confirmation_required"
    RATE_LIMITED = "rate_limited"


def record_denial(
    interface: str, target: str, reason: Reason, subject: str | None, detail: str
) -> None:
    """Count the refusal by interface, target and reason; log it with the subject and detail.

    ``target`` must be a route template or schema field name, never raw request data, and
    ``detail`` a message the API wrote (it may name the subject, never a credential).
    """
    ACCESS_DENIED.labels(interface, target, reason.value).inc()
    log.warning(
        "access denied: %s %s (%s)",
        interface,
        target,
        reason.value,
        extra={
            "event": "access_denied",
            "interface": interface,
            "target": target,
            "reason": reason.value,
            "subject": subject,
            "detail": detail,
        },
    )
