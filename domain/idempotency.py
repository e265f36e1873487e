"""Idempotency keys remembered by an aggregate, so a retried command is recognised."""

from __future__ import annotations

from domain.errors import Conflict
from domain.meta import EventMeta

MAX_REMEMBERED_KEYS = 256


class RemembersCommands:
    """Mixin for aggregates: keeps the last keys (and argument fingerprints) of their commands."""

    commands: dict[str, str | None]

    def seen(self, meta: EventMeta) -> bool:
        """True when this aggregate already recorded the command that carries ``meta``'s key."""
        if meta.idempotency_key is None or meta.idempotency_key not in self.commands:
            return False
        if self.commands[meta.idempotency_key] != meta.fingerprint:
            raise Conflict(
                f"idempotency key {meta.idempotency_key!r} was already used "
                "with different arguments"
            )
        return True

    def remember(self, meta: EventMeta) -> None:
        """Keep the command's idempotency key (bounded), so a retry is recognised."""
        if meta.idempotency_key is not None:
            self.commands[meta.idempotency_key] = meta.fingerprint
            if len(self.commands) > MAX_REMEMBERED_KEYS:
                del self.commands[next(iter(self.commands))]
