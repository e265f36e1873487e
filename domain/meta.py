"""Command metadata carried by every domain event: who, why, and which request."""

from __future__ import annotations

import msgspec


class EventMeta(msgspec.Struct, frozen=True, kw_only=True):
    """Actor, correlation id and idempotency key of the command that made an event."""

    actor: str
    correlation_id: str
    idempotency_key: str | None = None
    fingerprint: str | None = None
    """Digest of the command's arguments, to tell a retry from a reused key."""
