"""The notifier: alert and tariff events from HES_EVENTS in, webhooks and e-mails out.

Two durable JetStream pull consumers (``hes-notifier-alert`` on ``hes.events.alert.>`` and
``hes-notifier-tariff`` on ``hes.events.tariff.>``, explicit acks, from the stream's start so
the notifier's index knows every alert and tariff) feed ``NotificationIntake``; each fetched
batch is committed as deliveries and only then acknowledged. ``DeliverySender`` sends them.
Run one notifier per deployment (the index relies on the stream order of one consumer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from adapters.nats.subjects import event_filter
from adapters.notify.email import EmailSender, SmtpConfig
from adapters.notify.secret_box import SecretBox, load_or_create_key, parse_key
from adapters.notify.webhook import WebhookSender
from config.settings import DatabaseSettings, NatsSettings, NotificationSettings
from domain.notifications import RetryPolicy
from processes.notification_intake import NotificationIntake
from projections.notification_sender import DeliverySender

log = logging.getLogger(__name__)

CONSUMERS = {"alert": "hes-notifier-alert", "tariff": "hes-notifier-tariff"}
"""Aggregate whose events are notified → durable consumer name on HES_EVENTS."""
NOTIFIER = "notifier"
"""Name of the notifier in ``projection_status`` and ``hes projections status``."""
FETCH_BATCH = 100
ACK_WAIT_SECONDS = 30.0


def retry_policy(notifications: NotificationSettings) -> RetryPolicy:
    """The retry schedule the settings ask for."""
    return RetryPolicy(
        max_attempts=notifications.max_attempts,
        base_seconds=notifications.backoff_seconds,
        factor=notifications.backoff_factor,
    )


def secret_box(notifications: NotificationSettings, data_dir: Path) -> SecretBox:
    """The box sealing webhook secrets, keyed by HES_NOTIFICATION_KEY or the data directory."""
    if notifications.key:
        return SecretBox(parse_key(notifications.key))
    return SecretBox(load_or_create_key(Path(data_dir)))


def smtp_config(notifications: NotificationSettings) -> SmtpConfig | None:
    """SMTP settings, or None when no SMTP host is configured."""
    if not notifications.smtp_host:
        return None
    return SmtpConfig(
        host=notifications.smtp_host,
        port=notifications.smtp_port,
        user=notifications.smtp_user,
        password=notifications.smtp_password,
        sender=notifications.smtp_from,
        starttls=notifications.smtp_starttls,
        timeout=notifications.timeout_seconds,
    )


async def consumer_progress(js: Any, nats: NatsSettings) -> tuple[int, int] | None:
    """The notifier's (position, lag) on HES_EVENTS; None before it ever ran.

    Position: the lowest stream sequence both consumers acknowledged up to; lag: messages of
    its subjects not yet acknowledged.
    """
    positions, lag = [], 0
    for durable in CONSUMERS.values():
        try:
            info = await js.consumer_info(nats.stream("HES_EVENTS"), durable)
        except NotFoundError:
            return None
        positions.append(info.ack_floor.stream_seq or 0)
        lag += (info.num_pending or 0) + (info.num_ack_pending or 0)
    return min(positions), lag


class UndeliverableMessage(Exception):
    """The notifier cannot take the HES_EVENTS message at ``sequence`` (its intake fails)."""

    def __init__(self, sequence: int, payload: bytes, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.sequence = sequence
        self.event_id: UUID | None = None
        self.type = ""
        with contextlib.suppress(msgspec.DecodeError, ValueError):
            envelope = msgspec.json.decode(payload, type=dict[str, Any])
            self.event_id = UUID(str(envelope.get("id")))
            self.type = str(envelope.get("type", ""))


class Notifier:
    """Consumes alert and tariff events into deliveries and sends them, until stopped."""

    def __init__(
        self,
        database: DatabaseSettings,
        nats: NatsSettings,
        notifications: NotificationSettings,
        nc: NatsClient,
        pool: AsyncConnectionPool[Any],
        *,
        box: SecretBox,
        poll_interval: float = 1.0,
        fetch_timeout: float = 1.0,
        on_position: Callable[[str, int | None], None] | None = None,
    ) -> None:
        if database.url is None:
            raise ValueError("the notifier needs a resolved database URL")
        self.database, self.nats, self.notifications = database, nats, notifications
        self._nc = nc
        self._fetch_timeout = fetch_timeout
        self._on_position = on_position or (lambda aggregate, sequence: None)
        """Called with (alert or tariff, last stream sequence acknowledged or None) each round."""
        # Opened and closed by ``run``.
        self.pool = pool
        self.intake = NotificationIntake(self.pool, database.schema)
        smtp = smtp_config(notifications)
        self._webhook = WebhookSender(
            notifications.timeout_seconds, policy=notifications.webhook_policy
        )
        self._email = None if smtp is None else EmailSender(smtp)
        self.sender = DeliverySender(
            self.pool,
            database.schema,
            box,
            retry_policy(notifications),
            webhook=self._webhook,
            email=self._email,
            timeout=notifications.timeout_seconds,
            concurrency=notifications.concurrency,
            poll_interval=poll_interval,
        )
        self.queued = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume and deliver until ``stop`` is set; raises when a part fails (to restart)."""
        await self.pool.open(wait=True, timeout=10)
        try:
            subscriptions = [
                await self._subscribe(aggregate, durable)
                for aggregate, durable in CONSUMERS.items()
            ]
            parts = [
                asyncio.create_task(
                    self._consume(sub, aggregate, stop), name=f"notifier-{aggregate}"
                )
                for aggregate, sub in zip(CONSUMERS, subscriptions, strict=True)
            ]
            parts.append(asyncio.create_task(self.sender.run(stop), name="notifier-sender"))
            stopper = asyncio.create_task(stop.wait())
            try:
                done, _ = await asyncio.wait([*parts, stopper], return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is not stopper:
                        task.result()  # a part failed: raise it
            finally:
                stop.set()
                await asyncio.wait(parts, timeout=self.notifications.timeout_seconds + 5)
                for task in [*parts, stopper]:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                for sub in subscriptions:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
        finally:
            await self._webhook.close()
            if self._email is not None:
                self._email.close()
            await self.pool.close()

    async def _subscribe(self, aggregate: str, durable: str) -> Any:
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ACK_WAIT_SECONDS,
            max_ack_pending=FETCH_BATCH * 2,
            max_deliver=-1,
        )
        return await self._nc.jetstream().pull_subscribe(
            event_filter(self.nats.prefix, f"{aggregate}.>"),
            durable=durable,
            stream=self.nats.stream("HES_EVENTS"),
            config=config,
        )

    async def _consume(self, sub: Any, aggregate: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                messages: list[Msg] = await sub.fetch(FETCH_BATCH, timeout=self._fetch_timeout)
            except (TimeoutError, NatsTimeoutError):
                self._on_position(aggregate, None)  # nothing new, and working
                continue
            try:
                queued = await self.intake.take([m.data for m in messages])
            except Exception:
                queued = await self._one_by_one(messages)
            else:
                for msg in messages:
                    await msg.ack()
            last = messages[-1].metadata.sequence.stream if messages else None
            self._on_position(aggregate, last)
            self.queued += queued
            if queued:
                self.sender.wake.set()

    async def _one_by_one(self, messages: list[Msg]) -> int:
        """Take a failed batch message by message, to find the one that fails (if any)."""
        queued = 0
        skipped = await self.skipped([m.metadata.sequence.stream for m in messages])
        for index, msg in enumerate(messages):
            sequence = msg.metadata.sequence.stream
            try:
                if sequence not in skipped:
                    queued += await self.intake.take([msg.data])
            except Exception as exc:
                for rest in messages[index:]:  # hand them back now rather than after ack wait
                    with contextlib.suppress(Exception):
                        await rest.nak()
                raise UndeliverableMessage(sequence, msg.data, exc) from exc
            await msg.ack()
        return queued

    async def skipped(self, sequences: list[int]) -> set[int]:
        """The HES_EVENTS sequences among ``sequences`` an operator told the notifier to skip."""
        query = sql.SQL("SELECT stream_seq FROM {}.notifier_skips WHERE stream_seq = ANY(%s)")
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                query.format(sql.Identifier(self.database.schema)), (sequences,)
            )
            return {row[0] for row in await cur.fetchall()}
