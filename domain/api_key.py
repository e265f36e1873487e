"""The ApiKey aggregate: a machine client's credential from creation to revocation, as events.

The events say who created, rotated or revoked a key and what it may do; they never carry the
key's secret or its hash: they name the current secret by a random ``secret_id``, and the hash
lives in a table beside the event store under that id. A rotation names a new id, so the old
secret stops matching at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import Collector, Conflict
from domain.idempotency import RemembersCommands
from domain.meta import EventMeta
from domain.text import check_characters

API_KEY_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:api-key")
PREFIX_RE = re.compile(r"[a-z0-9]{10}\Z")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:@/-]{0,99}\Z")
MAX_REASON = 500


def api_key_id(prefix: str) -> UUID:
    """Deterministic aggregate id of the key with this public prefix."""
    return uuid5(API_KEY_NAMESPACE, prefix)


def check_grants(
    errors: Collector,
    roles: Iterable[str],
    scopes: Iterable[str],
    known_roles: frozenset[str],
    known_scopes: frozenset[str],
) -> None:
    """Record a field error for every unknown role or scope, and for a key that grants nothing."""
    roles, scopes = list(roles), list(scopes)
    for i, role in enumerate(roles):
        if role not in known_roles:
            allowed = ", ".join(sorted(known_roles))
            errors.add(f"roles[{i}]", "allowed", f"{role!r} is not one of: {allowed}")
    for i, scope in enumerate(scopes):
        if scope not in known_scopes:
            allowed = ", ".join(sorted(known_scopes))
            errors.add(f"scopes[{i}]", "allowed", f"{scope!r} is not one of: {allowed}")
    if not roles and not scopes:
        errors.add("scopes", "required", "a key needs at least one scope or role")


class ApiKey(Aggregate, RemembersCommands):
    """A machine client's key: its public prefix, name, grants, secret generation and status."""

    class Created(Aggregate.Created):
        """An administrator created the key (its secret was shown once, never recorded)."""

        prefix: str
        name: str
        roles: tuple[str, ...]
        scopes: tuple[str, ...]
        secret_id: UUID
        meta: EventMeta

    class Rotated(Aggregate.Event):
        """The key got a new secret; the secret of the previous generation stopped working."""

        generation: int
        secret_id: UUID
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Adopt the new generation and its secret."""
            aggregate.generation = self.generation
            aggregate.secret_id = self.secret_id
            aggregate.rotated_at = self.timestamp
            aggregate.rotated_by = self.meta.actor
            aggregate.remember(self.meta)

    class Revoked(Aggregate.Event):
        """The key stopped working for good."""

        reason: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the key revoked."""
            aggregate.revoked_at = self.timestamp
            aggregate.revoked_by = self.meta.actor
            aggregate.revoke_reason = self.reason
            aggregate.remember(self.meta)

    @staticmethod
    def create_id(prefix: str) -> UUID:
        """Derive the aggregate id from the public prefix, so a prefix names one key."""
        return api_key_id(prefix)

    @classmethod
    def create(
        cls,
        prefix: str,
        name: str,
        roles: Iterable[str],
        scopes: Iterable[str],
        secret_id: UUID,
        meta: EventMeta,
        *,
        known_roles: frozenset[str],
        known_scopes: frozenset[str],
    ) -> ApiKey:
        """A new key after checking its name, prefix and grants."""
        errors = Collector()
        if not PREFIX_RE.match(prefix):
            errors.add("prefix", "format", "prefix must be 10 lower-case letters or digits")
        if not _NAME_RE.match(name.strip()):
            errors.add(
                "name",
                "format",
                "name must be 1-100 letters, digits, spaces or . _ : @ / -, starting with a"
                " letter or digit",
            )
        check_grants(errors, roles, scopes, known_roles, known_scopes)
        errors.raise_if_any()
        return cls(
            prefix=prefix,
            name=name.strip(),
            roles=tuple(sorted(set(roles))),
            scopes=tuple(sorted(set(scopes))),
            secret_id=secret_id,
            meta=meta,
        )

    @event(Created)
    def __init__(
        self,
        prefix: str,
        name: str,
        roles: tuple[str, ...],
        scopes: tuple[str, ...],
        secret_id: UUID,
        meta: EventMeta,
    ) -> None:
        self.prefix = prefix
        self.name = name
        self.roles = roles
        self.scopes = scopes
        self.created_by = meta.actor
        self.generation = 1
        self.secret_id = secret_id
        self.rotated_at: datetime | None = None
        self.rotated_by: str | None = None
        self.revoked_at: datetime | None = None
        self.revoked_by: str | None = None
        self.revoke_reason: str | None = None
        self.commands: dict[str, str | None] = {}
        self.remember(meta)

    @property
    def active(self) -> bool:
        """True until the key is revoked."""
        return self.revoked_at is None

    def rotate(self, secret_id: UUID, meta: EventMeta) -> None:
        """Make ``secret_id`` the current secret (next generation). A revoked key cannot rotate."""
        if not self.active:
            raise Conflict(f"API key {self.prefix} is revoked; create a new key instead")
        self.trigger_event(
            self.Rotated, generation=self.generation + 1, secret_id=secret_id, meta=meta
        )

    def revoke(self, reason: str, meta: EventMeta) -> None:
        """Stop the key for good, with the administrator's reason."""
        errors = Collector()
        if not reason.strip():
            errors.add("reason", "required", "say why the key is revoked")
        elif len(reason) > MAX_REASON:
            errors.add("reason", "max-length", f"reason must have at most {MAX_REASON} characters")
        check_characters(errors, "reason", reason, multiline=True)
        errors.raise_if_any()
        if not self.active:
            raise Conflict(f"API key {self.prefix} is already revoked")
        self.trigger_event(self.Revoked, reason=reason.strip(), meta=meta)
