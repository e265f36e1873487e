"""Sends pending deliveries concurrently, logs every attempt, retries with backoff.

A delivery is *claimed* by setting a lease (``lease_until`` = now + the call's time limit + a
margin) on a PENDING row that is due; only then is it sent, and the attempt is recorded with
the delivery's new state in one transaction, guarded by the attempt count (so a claim whose
lease ran out cannot record twice). Deliveries run as independent tasks, each bounded by the
per-call time limit, and one subscription has at most ``per_endpoint`` deliveries in flight: a
slow or failing endpoint ties up only its own slots, never the others'.

After a crash, leased rows become due again when their lease ends. A delivery that was sent but
whose attempt was not recorded is then sent again — receivers deduplicate on
``X-HES-Event-Id`` (or ``X-HES-Delivery-Id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from adapters.notify.email import EmailSender, render
from adapters.notify.metrics import ATTEMPT_SECONDS, ATTEMPTS, DELIVERIES
from adapters.notify.result import SendResult, short
from adapters.notify.secret_box import SecretBox, SecretBoxError
from adapters.notify.webhook import WebhookSender
from domain.notifications import (
    Channel,
    DeliveryStatus,
    NotificationBody,
    RetryPolicy,
    Verdict,
)

log = logging.getLogger(__name__)

LEASE_MARGIN_SECONDS = 5.0
_bodies = msgspec.json.Decoder(NotificationBody)


class Claimed(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery this sender holds the lease of, with its subscription's target."""

    id: UUID
    subscription_id: UUID
    event_id: UUID
    attempts: int
    """Attempts recorded before this one."""
    body: bytes
    channel: Channel
    target: str
    secret_sealed: bytes | None


class DeliverySender:
    """The delivery loop of the notifier."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        schema: str,
        box: SecretBox,
        policy: RetryPolicy,
        *,
        webhook: WebhookSender,
        email: EmailSender | None,
        timeout: float,
        concurrency: int = 32,
        per_endpoint: int = 4,
        poll_interval: float = 1.0,
    ) -> None:
        self.pool = pool
        self.schema = sql.Identifier(schema)
        self._box = box
        self.policy = policy
        self._webhook = webhook
        self._email = email
        self._lease = timeout + LEASE_MARGIN_SECONDS
        self._concurrency = concurrency
        self._per_endpoint = per_endpoint
        self._poll_interval = poll_interval
        self.wake = asyncio.Event()
        self._in_flight: Counter[UUID] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and send due deliveries until ``stop``; then let the running ones finish."""
        try:
            while not stop.is_set():
                self.wake.clear()
                free = self._concurrency - len(self._tasks)
                claimed = await self.claim(free) if free > 0 else []
                for delivery in claimed:
                    self._start(delivery)
                if claimed and len(self._tasks) < self._concurrency:
                    continue  # there may be more due right now
                await self._idle(stop)
        finally:
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self._lease)
            for task in self._tasks:
                task.cancel()

    async def claim(self, limit: int) -> list[Claimed]:
        """Lease up to ``limit`` due deliveries, at most ``per_endpoint`` per subscription."""
        busy = {str(k): v for k, v in self._in_flight.items() if v > 0}
        query = sql.SQL(
            """
            WITH ranked AS (
                SELECT d.id, d.next_attempt_at, d.seq, row_number() OVER (
                    PARTITION BY d.subscription_id ORDER BY d.next_attempt_at, d.seq
                ) + coalesce((%(busy)s::jsonb ->> d.subscription_id::text)::int, 0) AS slot
                FROM {schema}.notification_deliveries d
                JOIN {schema}.notification_subscriptions s ON s.id = d.subscription_id
                WHERE d.status = 'PENDING' AND d.next_attempt_at <= now() AND s.enabled
                  AND (d.lease_until IS NULL OR d.lease_until < now())
            ), picked AS (
                SELECT d.id FROM {schema}.notification_deliveries d
                JOIN ranked r ON r.id = d.id
                WHERE r.slot <= %(per_endpoint)s AND d.status = 'PENDING'
                  AND (d.lease_until IS NULL OR d.lease_until < now())
                ORDER BY r.next_attempt_at, r.seq
                LIMIT %(limit)s
                FOR UPDATE OF d SKIP LOCKED
            )
            UPDATE {schema}.notification_deliveries d
            SET lease_until = now() + make_interval(secs => %(lease)s)
            FROM picked, {schema}.notification_subscriptions s
            WHERE d.id = picked.id AND s.id = d.subscription_id
            RETURNING d.id, d.subscription_id, d.event_id, d.attempts, d.body,
                      s.channel, s.target, s.secret_sealed
            """
        ).format(schema=self.schema)
        params = {
            "busy": Jsonb(busy),
            "per_endpoint": self._per_endpoint,
            "limit": limit,
            "lease": self._lease,
        }
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            rows = await cur.fetchall()
        return [
            Claimed(
                id=r["id"],
                subscription_id=r["subscription_id"],
                event_id=r["event_id"],
                attempts=r["attempts"],
                body=bytes(r["body"]),
                channel=Channel(r["channel"]),
                target=r["target"],
                secret_sealed=None if r["secret_sealed"] is None else bytes(r["secret_sealed"]),
            )
            for r in rows
        ]

    async def deliver(self, delivery: Claimed) -> DeliveryStatus | None:
        """Send one claimed delivery once and record the attempt; the delivery's new status."""
        result = await self._send(delivery)
        return await self.record(delivery, result)

    async def record(self, delivery: Claimed, result: SendResult) -> DeliveryStatus | None:
        """Log the attempt and move the delivery on; None when another claim recorded first."""
        attempt = delivery.attempts + 1
        status = self.policy.next_status(attempt, result.verdict)
        now = datetime.now(UTC)
        delay = self.policy.delay_after(attempt, delivery.id) or 0.0
        next_at = now + timedelta(seconds=delay)
        finished = None if status is DeliveryStatus.PENDING else now
        error = None if result.verdict is Verdict.SUCCESS else result.detail
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                sql.SQL(
                    "UPDATE {}.notification_deliveries SET attempts = %s, status = %s, "
                    "next_attempt_at = %s, lease_until = NULL, last_error = %s, "
                    "finished_at = %s WHERE id = %s AND attempts = %s"
                ).format(self.schema),
                (attempt, status.value, next_at, error, finished, delivery.id, delivery.attempts),
            )
            if cur.rowcount != 1:
                log.warning(
                    "notifier: attempt %d of delivery %s not recorded (recorded elsewhere or "
                    "its subscription was deleted)",
                    attempt,
                    delivery.id,
                )
                return None
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {}.notification_attempts (delivery_id, attempt, at, duration_ms, "
                    "verdict, status_code, detail) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                ).format(self.schema),
                (
                    delivery.id,
                    attempt,
                    now,
                    result.duration_ms,
                    result.verdict.value,
                    result.status_code,
                    result.detail,
                ),
            )
        channel = delivery.channel.value
        ATTEMPTS.labels(channel, result.verdict.value).inc()
        ATTEMPT_SECONDS.labels(channel).observe(result.duration_ms / 1000.0)
        if status is DeliveryStatus.DELIVERED:
            DELIVERIES.labels(channel, "delivered").inc()
        elif status is DeliveryStatus.FAILED:
            DELIVERIES.labels(channel, "failed").inc()
            log.warning(
                "notifier: delivery %s failed after %d attempts: %s",
                delivery.id,
                attempt,
                result.detail,
            )
        return status

    # -- plumbing ----------------------------------------------------------------------

    def _start(self, delivery: Claimed) -> None:
        self._in_flight[delivery.subscription_id] += 1
        task = asyncio.create_task(self._run_one(delivery), name=f"deliver-{delivery.id}")
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._in_flight[delivery.subscription_id] -= 1
            if self._in_flight[delivery.subscription_id] <= 0:
                del self._in_flight[delivery.subscription_id]
            self.wake.set()

        task.add_done_callback(done)

    async def _run_one(self, delivery: Claimed) -> None:
        try:
            await self.deliver(delivery)
        except Exception:
            # The lease runs out and the delivery is tried again; nothing is lost.
            log.exception("notifier: delivery %s could not be attempted", delivery.id)

    async def _send(self, delivery: Claimed) -> SendResult:
        started = time.perf_counter()
        try:
            body = _bodies.decode(delivery.body)
            if delivery.channel is Channel.WEBHOOK:
                if delivery.secret_sealed is None:
                    raise SecretBoxError("webhook subscription without a secret")
                secret = self._box.open(delivery.subscription_id, delivery.secret_sealed)
                return await self._webhook.send(
                    delivery.target,
                    secret,
                    delivery.body,
                    event_id=delivery.event_id,
                    delivery_id=delivery.id,
                )
            if self._email is None:
                return _permanent(started, "e-mail is not configured (HES_SMTP_HOST)")
            message = render(body, self._email.config.sender, delivery.target)
            return await self._email.send(delivery.target, message)
        except (SecretBoxError, msgspec.DecodeError) as exc:
            return _permanent(started, str(exc))

    async def _idle(self, stop: asyncio.Event) -> None:
        """Wait for new deliveries, a finished task, the next due retry, or ``stop``."""
        timeout = self._poll_interval
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL(
                    # Due rows held back by the per-endpoint limit wake us when a task ends.
                    "SELECT extract(epoch FROM least("
                    "min(next_attempt_at) FILTER (WHERE next_attempt_at > now()), "
                    "min(lease_until) FILTER (WHERE lease_until > now())) - now()) "
                    "FROM {}.notification_deliveries WHERE status = 'PENDING'"
                ).format(self.schema)
            )
            row = await cur.fetchone()
        if row is not None and row[0] is not None:
            timeout = min(timeout, max(0.01, float(row[0])))
        waiters = [asyncio.create_task(self.wake.wait()), asyncio.create_task(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter


def _permanent(started: float, detail: str) -> SendResult:
    return SendResult(
        verdict=Verdict.PERMANENT,
        status_code=None,
        detail=short(detail),
        duration_ms=(time.perf_counter() - started) * 1000.0,
    )
