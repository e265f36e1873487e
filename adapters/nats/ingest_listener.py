"""Gateways publishing reading batches over core NATS (``hes.ingest.>``), with request/reply."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from adapters.nats.subjects import INGEST_QUEUE_GROUP, ingest_subject_wildcard
from config.settings import NatsSettings
from domain.errors import BackPressure, DomainError, FieldError, ValidationFailed

log = logging.getLogger(__name__)

Ingest = Callable[[bytes], Awaitable[bytes]]
"""Takes the body of a ``POST /telemetry/batch`` and returns the JSON-encoded result."""

_STATUS = {"VALIDATION": 422, "NOT_FOUND": 404, "CONFLICT": 409, "FORBIDDEN": 403}


class ErrorReply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Reply to a message the head-end could not ingest (same fields as the HTTP problem body)."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldError] = []


@dataclass
class ListenerStats:
    """Counters of one listener since it started."""

    received: int = 0
    failed: int = 0
    """Messages answered with an error (or dropped without reply subject) after an exception."""


class IngestListener:
    """Queue-group subscriber of ``hes.ingest.>``: each message goes to ``ingest``, then replies."""

    def __init__(
        self,
        nc: NatsClient,
        nats: NatsSettings,
        ingest: Ingest,
        *,
        max_concurrency: int = 64,
        queue: str = INGEST_QUEUE_GROUP,
    ) -> None:
        self._nc = nc
        self._subject = ingest_subject_wildcard(nats.prefix)
        self._queue = queue
        self._ingest = ingest
        self._slots = asyncio.Semaphore(max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscription: Subscription | None = None
        self.stats = ListenerStats()

    @property
    def subject(self) -> str:
        """The wildcard subject listened to."""
        return self._subject

    async def start(self) -> None:
        """Subscribe in the queue group (idempotent)."""
        if self._subscription is None:
            self._subscription = await self._nc.subscribe(
                self._subject, queue=self._queue, cb=self._on_message
            )

    async def stop(self) -> None:
        """Stop taking messages and wait for the ones being ingested to be answered."""
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_message(self, msg: Msg) -> None:
        # Waiting for a slot here holds back the subscription (its pending queue) instead of
        # starting unbounded ingest tasks.
        await self._slots.acquire()
        task = asyncio.create_task(self._serve(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, msg: Msg) -> None:
        self.stats.received += 1
        try:
            try:
                reply = await self._ingest(msg.data)
            except Exception as exc:
                self.stats.failed += 1
                reply = msgspec.json.encode(_error_reply(exc, msg.subject))
            if msg.reply:
                await msg.respond(reply)
        except Exception:
            log.exception("ingest reply on %s failed", msg.subject)
        finally:
            self._slots.release()


def _error_reply(exc: Exception, subject: str) -> ErrorReply:
    """The reply for an exception, logged; internals are not revealed to the gateway."""
    if isinstance(exc, ValidationFailed):
        log.info("ingest on %s rejected: %s", subject, exc.message)
        return _reply(422, exc.code, exc.message, exc.errors)
    if isinstance(exc, DomainError):
        log.info("ingest on %s refused: %s", subject, exc.message)
        return _reply(_STATUS.get(exc.code, 409), exc.code, exc.message)
    if isinstance(exc, msgspec.DecodeError):
        log.info("ingest on %s: undecodable body: %s", subject, exc)
        return _reply(400, "BAD_REQUEST", str(exc))
    if isinstance(exc, BackPressure):
        log.warning("ingest on %s: back-pressure: %s", subject, exc)
        return _reply(503, "BACK_PRESSURE", str(exc))
    log.error("ingest on %s failed", subject, exc_info=exc)
    return _reply(500, "INTERNAL", "internal error; the server log has the details")


def _reply(
    status: int, code: str, detail: str, errors: list[FieldError] | None = None
) -> ErrorReply:
    return ErrorReply(
        type=f"urn:hes:error:{code.lower()}",
        title=code.replace("_", " ").capitalize(),
        status=status,
        detail=detail,
        code=code,
        errors=errors or [],
    )
