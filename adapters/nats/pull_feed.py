"""A continuous pull on one durable JetStream consumer: messages are handed over as they arrive.

nats-py's ``fetch(n, timeout)`` returns only when ``n`` messages came or ``timeout`` passed, so
at a low rate every reading would wait for the timeout. A ``PullFeed`` instead keeps pull requests
open on the server (``batch`` messages, expiring after ``expires``) and collects each message
the moment the server delivers it. The next request goes out before the open one runs out (of
messages or of time: requests overlap, so that no message waits for a request), as long as the
local buffer has room; a request lost in a reconnect simply expires.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

API_PREFIX = "$JS.API"
_RENEW_AT = 0.75
"""Share of a request's life after which the next one is sent."""


class PullFeed:
    """Keeps a pull request open on ``stream``/``consumer`` and buffers what it delivers."""

    def __init__(
        self,
        nc: NatsClient,
        stream: str,
        consumer: str,
        *,
        batch: int,
        expires: float,
        buffer: int,
        on_message: Callable[[], None],
    ) -> None:
        self._nc = nc
        self._subject = f"{API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._batch = batch
        self._expires = expires
        self._buffer = buffer
        self._on_message = on_message
        self._sub: Subscription | None = None
        self.ready: deque[Msg] = deque()
        """Delivered messages not yet taken."""
        self.taken = 0
        """Messages taken and not yet settled (acknowledged, nak'd or terminated)."""
        self._open: deque[list[float]] = deque()
        """Open requests, oldest first: [expiry (monotonic), messages still due]."""
        self.closed = False

    async def start(self) -> None:
        """Subscribe to the delivery inbox and send the first pull request."""
        self._sub = await self._nc.subscribe(self._inbox, cb=self._deliver, pending_msgs_limit=-1)
        await self.top_up()

    @property
    def started(self) -> bool:
        """True once subscribed (and not closed)."""
        return self._sub is not None and not self.closed

    async def close(self) -> list[Msg]:
        """Stop pulling; return the delivered messages nobody took (for the caller to hand back)."""
        self.closed = True
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        left = list(self.ready)
        self.ready.clear()
        return left

    def take(self, limit: int) -> list[Msg]:
        """Up to ``limit`` delivered messages, oldest first."""
        out: list[Msg] = []
        while self.ready and len(out) < limit:
            out.append(self.ready.popleft())
        self.taken += len(out)
        return out

    def settled(self, count: int) -> None:
        """``count`` taken messages were acknowledged, nak'd or terminated."""
        self.taken = max(0, self.taken - count)

    async def top_up(self) -> None:
        """Send a pull request unless the open ones cover what the buffer has room for."""
        if self.closed or self._sub is None:
            return
        now = time.monotonic()
        while self._open and (self._open[0][0] <= now or self._open[0][1] <= 0):
            self._open.popleft()  # expired (its 408 may never come) or served
        due = sum(int(r[1]) for r in self._open)
        renew = now + (1 - _RENEW_AT) * self._expires
        if self._open and self._open[-1][0] > renew and due >= self._batch // 2:
            return
        room = self._buffer - len(self.ready) - self.taken - due
        if room < min(self._batch, self._buffer) // 2:
            return
        count = min(self._batch, room)
        request = {"batch": count, "expires": int(self._expires * 1e9)}
        try:
            await self._nc.publish(self._subject, json.dumps(request).encode(), reply=self._inbox)
        except Exception:
            log.debug("pull request on %s failed", self._subject, exc_info=True)
            return  # not connected: the next top-up tries again
        self._open.append([now + self._expires, float(count)])

    async def _deliver(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None or msg.data:
            self.ready.append(msg)
            if self._open:
                self._open[0][1] -= 1  # the server serves the oldest request first
            self._on_message()
        elif status == "100":
            return  # idle heartbeat / flow control
        elif self._open:
            # 408 request expired, 409 (leadership change, consumer deleted, ...), 404: the
            # oldest request is over.
            self._open.popleft()
            if status not in ("404", "408"):
                log.info(
                    "pull on %s ended: %s %s",
                    self._subject,
                    status,
                    msg.headers.get("Description", "") if msg.headers else "",
                )
        if not self._open or self._open[0][1] <= 0:
            await self.top_up()
