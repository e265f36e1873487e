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
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from psycopg_pool import AsyncConnectionPool

from adapters.nats.subjects import event_filter
from adapters.notify.email import EmailSender, SmtpConfig
from adapters.notify.secret_box import SecretBox, load_or_create_key, parse_key
from adapters.notify.webhook import WebhookSender
from domain.notifications import RetryPolicy
from hes.settings import Settings
from projections.notification_intake import NotificationIntake
from projections.notification_sender import DeliverySender

log = logging.getLogger(__name__)

CONSUMERS = {"alert": "hes-notifier-alert", "tariff": "hes-notifier-tariff"}
"""Aggregate whose events are notified → durable consumer name on HES_EVENTS."""
FETCH_BATCH = 100
ACK_WAIT_SECONDS = 30.0


def retry_policy(settings: Settings) -> RetryPolicy:
    """The retry schedule the settings ask for."""
    return RetryPolicy(
        max_attempts=settings.notification_max_attempts,
        base_seconds=settings.notification_backoff_seconds,
        factor=settings.notification_backoff_factor,
    )


def secret_box(settings: Settings) -> SecretBox:
    """The box sealing webhook secrets, keyed by HES_NOTIFICATION_KEY or the data directory."""
    if settings.notification_key:
        return SecretBox(parse_key(settings.notification_key))
    return SecretBox(load_or_create_key(Path(settings.data_dir)))


def smtp_config(settings: Settings) -> SmtpConfig | None:
    """SMTP settings, or None when no SMTP host is configured."""
    if not settings.smtp_host:
        return None
    return SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port,
        user=settings.smtp_user,
        password=settings.smtp_password,
        sender=settings.smtp_from,
        starttls=settings.smtp_starttls,
        timeout=settings.notification_timeout_seconds,
    )


class Notifier:
    """Consumes alert and tariff events into deliveries and sends them, until stopped."""

    def __init__(
        self,
        settings: Settings,
        nc: NatsClient,
        *,
        poll_interval: float = 1.0,
        fetch_timeout: float = 1.0,
    ) -> None:
        if settings.database_url is None:
            raise ValueError("the notifier needs a resolved database URL")
        self.settings = settings
        self._nc = nc
        self._fetch_timeout = fetch_timeout
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=4,
            max_idle=30,  # give surplus connections back soon (adapters/postgres_store.py)
            open=False,
            kwargs={"autocommit": True},
        )
        self.intake = NotificationIntake(self.pool, settings.db_schema)
        smtp = smtp_config(settings)
        self._webhook = WebhookSender(settings.notification_timeout_seconds)
        self._email = None if smtp is None else EmailSender(smtp)
        self.sender = DeliverySender(
            self.pool,
            settings.db_schema,
            secret_box(settings),
            retry_policy(settings),
            webhook=self._webhook,
            email=self._email,
            timeout=settings.notification_timeout_seconds,
            concurrency=settings.notification_concurrency,
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
                asyncio.create_task(self._consume(sub, stop), name=f"notifier-intake-{i}")
                for i, sub in enumerate(subscriptions)
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
                await asyncio.wait(parts, timeout=self.settings.notification_timeout_seconds + 5)
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
        s = self.settings
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ACK_WAIT_SECONDS,
            max_ack_pending=FETCH_BATCH * 2,
            max_deliver=-1,
        )
        return await self._nc.jetstream().pull_subscribe(
            event_filter(s.nats_prefix, f"{aggregate}.>"),
            durable=durable,
            stream=s.stream("HES_EVENTS"),
            config=config,
        )

    async def _consume(self, sub: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                messages: list[Msg] = await sub.fetch(FETCH_BATCH, timeout=self._fetch_timeout)
            except (TimeoutError, NatsTimeoutError):
                continue
            try:
                queued = await self.intake.take([m.data for m in messages])
            except Exception:
                for msg in messages:  # hand them back now rather than after the ack wait
                    with contextlib.suppress(Exception):
                        await msg.nak()
                raise
            for msg in messages:
                await msg.ack()
            self.queued += queued
            if queued:
                self.sender.wake.set()
