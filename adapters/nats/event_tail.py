"""Reference consumer of HES_EVENTS: prints one CloudEvent (JSON) per line.

Without a durable name it uses an ephemeral *ordered* consumer (no acks, gap-free, in stream
order). With one it creates or reuses a durable pull consumer and acknowledges each message
after printing it, so a restart resumes after the last acknowledged event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy


class StartAt(msgspec.Struct, frozen=True, kw_only=True):
    """Where a new consumer starts: the beginning (default), a sequence, a time, or new only."""

    seq: int | None = None
    time: datetime | None = None
    new_only: bool = False

    def consumer_config(self) -> ConsumerConfig:
        """Deliver policy and start options of a consumer created at this start."""
        if self.seq is not None:
            return ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.seq
            )
        if self.time is not None:
            return ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=self.time
            )
        if self.new_only:
            return ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        return ConsumerConfig(deliver_policy=DeliverPolicy.ALL)


async def tail_events(
    nc: NatsClient,
    *,
    stream: str,
    subject: str,
    start: StartAt,
    write: Callable[[bytes], None],
    durable: str | None = None,
    limit: int | None = None,
    idle_timeout: float | None = None,
) -> int:
    """Write each event's JSON until ``limit`` events or ``idle_timeout`` s without one."""
    if durable is not None:
        return await _tail_durable(nc, stream, subject, start, write, durable, limit, idle_timeout)
    js = nc.jetstream()
    config = start.consumer_config()
    sub = await js.subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        config=config,
        deliver_policy=config.deliver_policy,
    )
    count = 0
    try:
        while limit is None or count < limit:
            try:
                msg = await sub.next_msg(timeout=_wait(idle_timeout))
            except NatsTimeoutError:
                if idle_timeout is not None:
                    break
                continue
            write(msg.data)
            count += 1
    finally:
        await sub.unsubscribe()
    return count


async def _tail_durable(
    nc: NatsClient,
    stream: str,
    subject: str,
    start: StartAt,
    write: Callable[[bytes], None],
    durable: str,
    limit: int | None,
    idle_timeout: float | None,
) -> int:
    config = start.consumer_config()
    config.ack_policy = AckPolicy.EXPLICIT
    config.ack_wait = 30
    sub = await nc.jetstream().pull_subscribe(
        subject, durable=durable, stream=stream, config=config
    )
    count = 0
    idle_since = time.monotonic()
    while limit is None or count < limit:
        batch = 100 if limit is None else min(100, limit - count)
        try:
            messages: list[Msg] = await sub.fetch(batch, timeout=_wait(idle_timeout))
        except (TimeoutError, NatsTimeoutError):
            if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                break
            continue
        for msg in messages:
            write(msg.data)
            await msg.ack_sync()
            count += 1
        idle_since = time.monotonic()
    return count


def _wait(idle_timeout: float | None) -> float:
    return 1.0 if idle_timeout is None else max(0.05, min(idle_timeout, 1.0))
