"""Read side of the delivery log: deliveries with every attempt, newest first, by cursor."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from commands.context import Actor
from commands.notification_subscriptions import NotificationSubscriptions, authorize_reader
from commands.policy import COMMAND_ROLES
from domain.errors import FieldError, NotFound, ValidationFailed
from domain.notifications import DeliveryStatus, EventKind, Verdict

MAX_PAGE = 200


class AttemptRow(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt: when, how long, how the endpoint answered."""

    attempt: int
    at: datetime
    duration_ms: float
    verdict: Verdict
    status_code: int | None
    detail: str | None


class DeliveryRow(msgspec.Struct, frozen=True, kw_only=True):
    """One event for one subscription, with its attempts in order."""

    id: UUID
    seq: int
    subscription_id: UUID
    event_id: UUID
    event_type: str
    event_time: datetime
    kind: EventKind
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    attempt_log: list[AttemptRow]


class DeliveryPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of deliveries and the cursor after its last one."""

    items: list[DeliveryRow]
    has_next_page: bool
    end_cursor: str | None


def encode_cursor(seq: int) -> str:
    """Opaque cursor of a delivery's position in the log."""
    return base64.urlsafe_b64encode(f"d:{seq}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    """The position in a cursor; raises ``ValidationFailed`` on anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if text.startswith("d:"):
            return int(text[2:])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ValidationFailed([_problem("after", "cursor", "after is not a cursor of this list")])


class NotificationDeliveries:
    """Delivery log queries: owners see their own; operators and admins see everyone's."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], schema: str, subscriptions: NotificationSubscriptions
    ) -> None:
        self.pool = pool
        self.schema = sql.Identifier(schema)
        self._subscriptions = subscriptions

    async def page(
        self,
        actor: Actor,
        *,
        subscription_id: UUID | None = None,
        status: DeliveryStatus | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> DeliveryPage:
        """Deliveries newest first, optionally of one subscription and one status."""
        authorize_reader(actor)
        if not 1 <= first <= MAX_PAGE:
            raise ValidationFailed([_problem("first", "range", f"first must be 1..{MAX_PAGE}")])
        before = None if after is None else decode_cursor(after)
        sees_all = not actor.roles.isdisjoint(COMMAND_ROLES["readAnyNotificationDeliveries"])
        conditions: list[sql.Composable] = []
        params: list[object] = []
        if subscription_id is not None:
            row = await self._subscriptions.get(subscription_id)
            if row is None or not (sees_all or row.owner.subject == actor.subject):
                raise NotFound(f"no notification subscription with id {subscription_id}")
            conditions.append(sql.SQL("d.subscription_id = %s"))
            params.append(subscription_id)
        elif not sees_all:
            conditions.append(sql.SQL("s.owner = %s"))
            params.append(actor.subject)
        if status is not None:
            conditions.append(sql.SQL("d.status = %s"))
            params.append(status.value)
        if before is not None:
            conditions.append(sql.SQL("d.seq < %s"))
            params.append(before)
        where = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")
        query = sql.SQL(
            "SELECT d.id, d.seq, d.subscription_id, d.event_id, d.event_type, d.event_time, "
            "d.kind, d.status, d.attempts, d.next_attempt_at, d.last_error, d.created_at, "
            "d.finished_at, coalesce((SELECT json_agg(json_build_object('attempt', a.attempt, "
            "'at', a.at, 'duration_ms', a.duration_ms, 'verdict', a.verdict, 'status_code', "
            "a.status_code, 'detail', a.detail) ORDER BY a.attempt) "
            "FROM {schema}.notification_attempts a WHERE a.delivery_id = d.id), '[]') AS log "
            "FROM {schema}.notification_deliveries d "
            "JOIN {schema}.notification_subscriptions s ON s.id = d.subscription_id "
            "WHERE {where} ORDER BY d.seq DESC LIMIT %s"
        ).format(schema=self.schema, where=where)
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, [*params, first + 1])
            rows = await cur.fetchall()
        items = [_delivery(r) for r in rows[:first]]
        return DeliveryPage(
            items=items,
            has_next_page=len(rows) > first,
            end_cursor=encode_cursor(items[-1].seq) if items else None,
        )


def _delivery(r: dict[str, Any]) -> DeliveryRow:
    status = DeliveryStatus(r["status"])
    return DeliveryRow(
        id=r["id"],
        seq=r["seq"],
        subscription_id=r["subscription_id"],
        event_id=r["event_id"],
        event_type=r["event_type"],
        event_time=r["event_time"],
        kind=EventKind(r["kind"]),
        status=status,
        attempts=r["attempts"],
        next_attempt_at=r["next_attempt_at"] if status is DeliveryStatus.PENDING else None,
        last_error=r["last_error"],
        created_at=r["created_at"],
        finished_at=r["finished_at"],
        attempt_log=msgspec.convert(r["log"], list[AttemptRow], strict=False),
    )


def _problem(field: str, rule: str, message: str) -> FieldError:
    return FieldError(field, rule, message)
