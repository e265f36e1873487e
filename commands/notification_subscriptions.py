"""Notification subscriptions: a plain table each user manages for themselves.

Not event-sourced on purpose: a subscription is a personal preference, not a fact about the
grid, and it holds an e-mail address (personal data) and a webhook secret. The event store is
append-only and hash-chained, so neither could ever be erased from it; a row can. Changes are
guarded by a version column (optimistic concurrency) and idempotency keys per owner.

The webhook secret is generated here, returned once by ``create`` (and by ``update`` when
rotated) and stored sealed (``adapters.notify.secret_box``); no query ever returns it again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import msgspec
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from commands.context import Actor, Role
from commands.policy import READ_ROLES, authorize
from domain.alert import AlertType, Severity
from domain.errors import Collector, Conflict, Forbidden, NotFound
from domain.notifications import (
    DEFAULT_POLICY,
    MAX_SUBSCRIPTIONS_PER_OWNER,
    Channel,
    EventKind,
    Owner,
    Preferences,
    Subscription,
    SubscriptionDraft,
    SubscriptionSpec,
    validate,
)
from domain.webhook_policy import WebhookPolicy

_COLUMNS = sql.SQL(
    "id, owner, owner_roles, owner_customer, channel, target, kinds, regions, alert_types, "
    "min_severity, enabled, created_at, updated_at, version"
)


class SubscriptionRow(msgspec.Struct, frozen=True, kw_only=True):
    """A stored subscription, without its secret."""

    id: UUID
    owner: Owner
    spec: SubscriptionSpec
    created_at: datetime
    updated_at: datetime
    version: int

    def to_domain(self) -> Subscription:
        """The subscription as the matching rules see it."""
        return Subscription(
            id=self.id, owner=self.owner, spec=self.spec, created_at=self.created_at
        )


class Saved(msgspec.Struct, frozen=True, kw_only=True):
    """A created or updated subscription; ``secret`` only when one was just generated."""

    subscription: SubscriptionRow
    secret: str | None = None
    replayed: bool = False
    """True when an idempotency key matched an earlier create (the secret is not shown again)."""


class Changes(msgspec.Struct, frozen=True, kw_only=True):
    """Fields an update replaces (None: keep)."""

    url: str | None = None
    email: str | None = None
    kinds: Sequence[str] | None = None
    regions: Sequence[str] | None = None
    alert_types: Sequence[str] | None = None
    min_severity: str | None = None
    enabled: bool | None = None
    rotate_secret: bool = False


class SecretSealer(Protocol):
    """Makes webhook signing secrets and seals them for storage (``adapters.notify.secret_box``)."""

    def new_secret(self) -> str:
        """A fresh signing secret."""
        ...

    def seal(self, subscription: UUID, secret: str) -> bytes:
        """``secret`` sealed, bound to ``subscription``."""
        ...


class NotificationSubscriptions:
    """Creates, changes, lists and deletes subscriptions in ``schema`` for their owners."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        schema: str,
        box: SecretSealer,
        *,
        policy: WebhookPolicy = DEFAULT_POLICY,
        email_enabled: bool = True,
    ) -> None:
        self.pool = pool
        self.schema = sql.Identifier(schema)
        self._box = box
        self._policy = policy
        self._email_enabled = email_enabled

    # -- commands ----------------------------------------------------------------------

    async def create(
        self, actor: Actor, draft: SubscriptionDraft, idempotency_key: str | None = None
    ) -> Saved:
        """Save a new subscription owned by ``actor``; a webhook's secret is returned once."""
        authorize(actor, "manageNotificationSubscriptions")
        spec = self._validate(draft)
        id_ = uuid.uuid4()
        secret = self._box.new_secret() if spec.channel is Channel.WEBHOOK else None
        sealed = None if secret is None else self._box.seal(id_, secret)
        now = datetime.now(UTC)
        async with self.pool.connection() as conn, conn.transaction():
            # One owner's creates run one at a time: the per-owner limit and key hold.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (actor.subject,))
            if idempotency_key is not None:
                earlier = await self._select(
                    conn,
                    sql.SQL("owner = %s AND idempotency_key = %s"),
                    (actor.subject, idempotency_key),
                )
                if earlier:
                    return Saved(subscription=earlier[0], replayed=True)
            cur = await conn.execute(
                sql.SQL(
                    "SELECT count(*) FROM {}.notification_subscriptions WHERE owner = %s"
                ).format(self.schema),
                (actor.subject,),
            )
            count = await cur.fetchone()
            if count is not None and count[0] >= MAX_SUBSCRIPTIONS_PER_OWNER:
                raise Conflict(
                    f"{actor.subject} already has {MAX_SUBSCRIPTIONS_PER_OWNER} notification "
                    "subscriptions; delete one first"
                )
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {}.notification_subscriptions (id, owner, owner_roles, "
                    "owner_customer, channel, target, secret_sealed, kinds, regions, alert_types, "
                    "min_severity, enabled, idempotency_key, created_at, updated_at, version) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 1)"
                ).format(self.schema),
                (
                    id_,
                    actor.subject,
                    sorted(str(r) for r in actor.roles),
                    actor.customer_account,
                    spec.channel.value,
                    spec.target,
                    sealed,
                    *_preference_columns(spec.preferences),
                    spec.enabled,
                    idempotency_key,
                    now,
                    now,
                ),
            )
        row = SubscriptionRow(
            id=id_, owner=_owner(actor), spec=spec, created_at=now, updated_at=now, version=1
        )
        return Saved(subscription=row, secret=secret)

    async def update(
        self, actor: Actor, id_: UUID, changes: Changes, expected_version: int | None = None
    ) -> Saved:
        """Replace the given fields (the channel stays); optionally rotate the webhook secret."""
        authorize(actor, "manageNotificationSubscriptions")
        async with self.pool.connection() as conn, conn.transaction():
            rows = await self._select(conn, sql.SQL("id = %s"), (id_,), lock=True)
            current = self._managed(actor, rows, id_)
            if expected_version is not None and expected_version != current.version:
                raise Conflict(
                    f"notification subscription {id_} is at version {current.version}, "
                    f"not {expected_version}"
                )
            spec = self._validate(_merge(current.spec, changes))
            errors = Collector()
            if changes.rotate_secret and spec.channel is not Channel.WEBHOOK:
                errors.add("rotateSecret", "channel", "only WEBHOOK subscriptions have a secret")
            errors.raise_if_any()
            secret = self._box.new_secret() if changes.rotate_secret else None
            # The owner's roles are re-read when the owner saves (not when an admin does).
            owner = _owner(actor) if actor.subject == current.owner.subject else current.owner
            now = datetime.now(UTC)
            await conn.execute(
                sql.SQL(
                    "UPDATE {}.notification_subscriptions SET owner_roles = %s, "
                    "owner_customer = %s, target = %s, kinds = %s, regions = %s, "
                    "alert_types = %s, min_severity = %s, enabled = %s, updated_at = %s, "
                    "secret_sealed = coalesce(%s, secret_sealed), version = version + 1 "
                    "WHERE id = %s"
                ).format(self.schema),
                (
                    sorted(owner.roles),
                    owner.customer_account,
                    spec.target,
                    *_preference_columns(spec.preferences),
                    spec.enabled,
                    now,
                    None if secret is None else self._box.seal(id_, secret),
                    id_,
                ),
            )
        row = SubscriptionRow(
            id=id_,
            owner=owner,
            spec=spec,
            created_at=current.created_at,
            updated_at=now,
            version=current.version + 1,
        )
        return Saved(subscription=row, secret=secret)

    async def delete(self, actor: Actor, id_: UUID) -> None:
        """Delete a subscription with its delivery log (the address and secret are erased)."""
        authorize(actor, "manageNotificationSubscriptions")
        async with self.pool.connection() as conn, conn.transaction():
            rows = await self._select(conn, sql.SQL("id = %s"), (id_,), lock=True)
            self._managed(actor, rows, id_)
            await conn.execute(
                sql.SQL("DELETE FROM {}.notification_subscriptions WHERE id = %s").format(
                    self.schema
                ),
                (id_,),
            )

    # -- queries -----------------------------------------------------------------------

    async def listed(self, actor: Actor, all_owners: bool = False) -> list[SubscriptionRow]:
        """The actor's subscriptions (every owner's with ``all_owners``, admins only)."""
        authorize_reader(actor)
        async with self.pool.connection() as conn:
            if all_owners:
                authorize(actor, "manageAnyNotificationSubscription")
                return await self._select(conn, sql.SQL("true"), ())
            return await self._select(conn, sql.SQL("owner = %s"), (actor.subject,))

    async def get(self, id_: UUID) -> SubscriptionRow | None:
        """One subscription by id (no access check: callers decide who sees it)."""
        async with self.pool.connection() as conn:
            rows = await self._select(conn, sql.SQL("id = %s"), (id_,))
        return rows[0] if rows else None

    # -- plumbing ----------------------------------------------------------------------

    def _validate(self, draft: SubscriptionDraft) -> SubscriptionSpec:
        spec = validate(draft, policy=self._policy)
        if spec.channel is Channel.EMAIL and not self._email_enabled:
            errors = Collector()
            errors.add(
                "email", "smtp", "e-mail notifications are not configured here (HES_SMTP_HOST)"
            )
            errors.raise_if_any()
        return spec

    def _managed(self, actor: Actor, rows: list[SubscriptionRow], id_: UUID) -> SubscriptionRow:
        """The subscription if the actor may change it, else NotFound (existence stays hidden)."""
        if rows and (rows[0].owner.subject == actor.subject or Role.ADMIN in actor.roles):
            return rows[0]
        raise NotFound(f"no notification subscription with id {id_}")

    async def _select(
        self,
        conn: AsyncConnection[Any],
        where: sql.Composable,
        params: tuple[object, ...],
        *,
        lock: bool = False,
    ) -> list[SubscriptionRow]:
        query = sql.SQL(
            "SELECT {} FROM {}.notification_subscriptions WHERE {} ORDER BY created_at, id{}"
        ).format(_COLUMNS, self.schema, where, sql.SQL(" FOR UPDATE" if lock else ""))
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            rows = await cur.fetchall()
        return [subscription_row(r) for r in rows]


def subscription_row(r: dict[str, Any]) -> SubscriptionRow:
    """A subscription from a row of ``notification_subscriptions`` (columns as named)."""
    return SubscriptionRow(
        id=r["id"],
        owner=Owner(
            subject=r["owner"],
            roles=frozenset(r["owner_roles"]),
            customer_account=r["owner_customer"],
        ),
        spec=SubscriptionSpec(
            channel=Channel(r["channel"]),
            target=r["target"],
            preferences=Preferences(
                kinds=frozenset(EventKind(k) for k in r["kinds"]),
                regions=frozenset(r["regions"]),
                alert_types=frozenset(AlertType(t) for t in r["alert_types"]),
                min_severity=Severity(r["min_severity"]),
            ),
            enabled=r["enabled"],
        ),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        version=r["version"],
    )


def _owner(actor: Actor) -> Owner:
    return Owner(
        subject=actor.subject,
        roles=frozenset(str(r) for r in actor.roles),
        customer_account=actor.customer_account,
    )


def _preference_columns(p: Preferences) -> tuple[list[str], list[str], list[str], str]:
    return (
        sorted(k.value for k in p.kinds),
        sorted(p.regions),
        sorted(t.value for t in p.alert_types),
        p.min_severity.value,
    )


def _merge(spec: SubscriptionSpec, changes: Changes) -> SubscriptionDraft:
    """The draft an update validates: the current spec with the given fields replaced."""
    p = spec.preferences
    webhook = spec.channel is Channel.WEBHOOK
    return SubscriptionDraft(
        channel=spec.channel.value,
        url=_keep(changes.url, spec.target) if webhook else changes.url,
        email=changes.email if webhook else _keep(changes.email, spec.target),
        kinds=[k.value for k in p.kinds] if changes.kinds is None else changes.kinds,
        regions=sorted(p.regions) if changes.regions is None else changes.regions,
        alert_types=[t.value for t in p.alert_types]
        if changes.alert_types is None
        else changes.alert_types,
        min_severity=p.min_severity.value if changes.min_severity is None else changes.min_severity,
        enabled=spec.enabled if changes.enabled is None else changes.enabled,
    )


def _keep(given: str | None, current: str) -> str:
    return current if given is None else given


def authorize_reader(actor: Actor) -> None:
    """Raise ``Forbidden`` unless the actor holds a role that reads (machine tokens hold none)."""
    if actor.roles.isdisjoint(READ_ROLES):
        raise Forbidden(f"notification subscriptions need a role; {actor.subject} has none")
