"""Who runs a command, on whose behalf, and under which request ids."""

from __future__ import annotations

import enum
import hashlib
import uuid

import msgspec

from domain.meta import EventMeta


class Role(enum.StrEnum):
    """What a person or machine may do in the head-end."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
    AUDITOR = "auditor"
    CUSTOMER = "customer"


class Scope(enum.StrEnum):
    """What a machine client (gateway, integration) may do, independent of roles."""

    INGEST = "ingest"
    EVENTS_READ = "events:read"
    EXPORT = "export"


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """An authenticated caller: its subject, roles, scopes and (for customers) its account."""

    subject: str
    roles: frozenset[Role] = frozenset()
    scopes: frozenset[Scope] = frozenset()
    customer_account: str | None = None

    def has(self, *roles: Role) -> bool:
        """True when the actor holds any of ``roles``."""
        return not self.roles.isdisjoint(roles)


SYSTEM = Actor(subject="system", roles=frozenset({Role.ADMIN}))


class CommandContext(msgspec.Struct, frozen=True, kw_only=True):
    """The actor plus the ids that travel with a command into its events."""

    actor: Actor
    correlation_id: str = msgspec.field(default_factory=lambda: str(uuid.uuid4()))
    idempotency_key: str | None = None

    def meta(self, command: str, *args: object) -> EventMeta:
        """Event metadata, with a fingerprint of the command's arguments."""
        fingerprint = None
        if self.idempotency_key is not None:
            digest = hashlib.sha256(command.encode())
            digest.update(msgspec.json.encode(args))
            fingerprint = digest.hexdigest()[:32]
        return EventMeta(
            actor=self.actor.subject,
            correlation_id=self.correlation_id,
            idempotency_key=self.idempotency_key,
            fingerprint=fingerprint,
        )
