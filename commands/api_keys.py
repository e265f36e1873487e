"""API keys of machine clients: create, rotate, revoke (admin), list, and check a presented key.

A key reads ``hes_<prefix>_<secret>``: the prefix (10 characters) names the key and may be
shown and logged; the secret (32 random bytes) is shown once and stored only as its SHA-256
digest in ``api_key_secrets``, under a random ``secret_id``. Who did what to a key is recorded
as events of the ``ApiKey`` aggregate, which name the current ``secret_id`` (never the secret
or its digest).

Order of writes, so that a crash between them never leaves a usable key unrecorded: the digest
row is inserted first, then the event that makes its ``secret_id`` current. A digest whose event
never got saved (crash, lost version race) is named by no event and never matches.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from typing import Any, cast
from uuid import UUID, uuid4

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import Mapper, Recording
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import get_topic
from psycopg import sql

from commands.codec import MsgspecMapper
from commands.concurrency import Save, last_position, save_with_retry
from commands.context import Actor, CommandContext, Role, Scope
from commands.policy import authorize
from domain.api_key import PREFIX_RE, ApiKey, api_key_id
from domain.errors import NotFound

KEY_RE = re.compile(r"hes_([a-z0-9]{10})_([A-Za-z0-9_-]{43})\Z")
_PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
KEY_ROLES = frozenset(r.value for r in Role if r is not Role.CUSTOMER)
"""Roles a key may hold: a customer is a person with an account, never a machine."""
KEY_SCOPES = frozenset(s.value for s in Scope)
PAGE = 500


class IssuedKey(msgspec.Struct, frozen=True, kw_only=True):
    """A key as created or rotated: its state and the full key text, to be shown once."""

    key: ApiKey
    secret: str
    notification_id: int | None

    def __repr__(self) -> str:
        return f"IssuedKey(prefix={self.key.prefix!r}, generation={self.key.generation})"


def digest(secret: str) -> bytes:
    """SHA-256 of a key's secret part (the secret is 256 random bits: no salt or stretching)."""
    return hashlib.sha256(secret.encode()).digest()


def actor_of(key: ApiKey) -> Actor:
    """The actor an authenticated key acts as (its prefix is the recorded subject)."""
    return Actor(
        subject=f"apikey:{key.prefix}",
        roles=frozenset(Role(r) for r in key.roles),
        scopes=frozenset(Scope(s) for s in key.scopes),
    )


class ApiKeyRegistry(Application[UUID]):
    """The write side of API keys, and the check of a presented key."""

    name = "api_keys"

    def construct_mapper(self) -> Mapper[UUID]:
        """Encode events with msgspec instead of the library's JSON transcoder."""
        return MsgspecMapper()

    # -- queries on the write model ---------------------------------------------------

    def get(self, prefix: str) -> ApiKey:
        """Load a key by its prefix or raise ``NotFound``."""
        if not PREFIX_RE.match(prefix):
            raise NotFound(f"no API key with prefix {prefix[:20]!r}")
        try:
            key: ApiKey = self.repository.get(api_key_id(prefix))
        except AggregateNotFoundError:
            raise NotFound(f"no API key with prefix {prefix!r}") from None
        return key

    def all(self) -> list[ApiKey]:
        """Every key ever created, oldest first (revoked ones included)."""
        topic = get_topic(ApiKey.Created)
        keys: list[ApiKey] = []
        start: int | None = None
        while True:
            page = self.recorder.select_notifications(
                start, PAGE, topics=[topic], inclusive_of_start=start is None
            )
            keys.extend(self.repository.get(_uuid(n.originator_id)) for n in page)
            if len(page) < PAGE:
                return keys
            start = page[-1].id

    def authenticate(self, presented: str) -> ApiKey | None:
        """The active key whose current secret is ``presented``; None for anything else."""
        match = KEY_RE.match(presented)
        if match is None:
            return None
        prefix, secret = match.groups()
        try:
            key: ApiKey = self.repository.get(api_key_id(prefix))
        except AggregateNotFoundError:
            return None
        if not key.active:
            return None
        stored = self._stored_digest(key.secret_id, prefix)
        if stored is None or not hmac.compare_digest(stored, digest(secret)):
            return None
        return key

    # -- commands ------------------------------------------------------------------

    def create(
        self, name: str, roles: list[str], scopes: list[str], ctx: CommandContext
    ) -> IssuedKey:
        """Create a key granting ``roles`` and ``scopes``; the returned secret is shown once."""
        authorize(ctx.actor, "createApiKey")
        meta = ctx.meta("createApiKey", name, sorted(roles), sorted(scopes))

        def attempt() -> IssuedKey | Save[IssuedKey]:
            prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(10))
            secret, secret_id = secrets.token_urlsafe(32), uuid4()
            key = ApiKey.create(
                prefix,
                name,
                roles,
                scopes,
                secret_id,
                meta,
                known_roles=KEY_ROLES,
                known_scopes=KEY_SCOPES,
            )
            self._store_digest(secret_id, prefix, digest(secret))
            return Save((key,), _issued(key, f"hes_{prefix}_{secret}"))

        # a lost race here means the prefix is taken (1 in 36^10): draw another at once
        return save_with_retry(
            self, attempt, "could not draw an unused key prefix; try again", pause=False
        )

    def rotate(self, prefix: str, ctx: CommandContext) -> IssuedKey:
        """Give the key a new secret (shown once); the previous secret stops working at once."""
        authorize(ctx.actor, "rotateApiKey")
        meta = ctx.meta("rotateApiKey", prefix)

        def attempt() -> IssuedKey | Save[IssuedKey]:
            key = self.get(prefix)
            secret, secret_id = secrets.token_urlsafe(32), uuid4()
            key.rotate(secret_id, meta)
            self._store_digest(secret_id, prefix, digest(secret))
            return Save((key,), _issued(key, f"hes_{prefix}_{secret}"))

        return save_with_retry(self, attempt, f"API key {prefix} is changing too fast; try again")

    def revoke(self, prefix: str, reason: str, ctx: CommandContext) -> ApiKey:
        """Stop the key for good; requests with it are refused from the next one on."""
        authorize(ctx.actor, "revokeApiKey")
        meta = ctx.meta("revokeApiKey", prefix, reason)

        def attempt() -> ApiKey | Save[ApiKey]:
            key = self.get(prefix)
            if key.seen(meta):
                return key
            key.revoke(reason, meta)
            return Save((key,), lambda _: key)

        return save_with_retry(self, attempt, f"API key {prefix} is changing too fast; try again")

    # -- digest table ------------------------------------------------------------------

    def _table(self) -> tuple[PostgresApplicationRecorder, sql.Composed]:
        recorder = cast(PostgresApplicationRecorder, self.recorder)
        table = sql.Identifier(recorder.datastore.schema, "api_key_secrets")
        return recorder, sql.SQL("{}").format(table)

    def _store_digest(self, secret_id: UUID, prefix: str, value: bytes) -> None:
        recorder, table = self._table()
        statement = sql.SQL("INSERT INTO {} (secret_id, prefix, digest) VALUES (%s, %s, %s)")
        with recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute(statement.format(table), (secret_id, prefix, value))

    def _stored_digest(self, secret_id: UUID, prefix: str) -> bytes | None:
        recorder, table = self._table()
        statement = sql.SQL("SELECT digest FROM {} WHERE secret_id = %s AND prefix = %s")
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement.format(table), (secret_id, prefix))
            row: dict[str, Any] | None = cursor.fetchone()
        return None if row is None else bytes(row["digest"])


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _issued(key: ApiKey, secret: str) -> Callable[[list[Recording[UUID]]], IssuedKey]:
    """The answer of a saved create or rotate: the key, its secret (shown once), its position."""
    return lambda r: IssuedKey(key=key, secret=secret, notification_id=last_position(r))
