"""Rejected reading input to stream HES_DEADLETTER, acknowledged by JetStream: none dropped."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from typing import Protocol

import msgspec
from nats.aio.client import Client as NatsClient

from adapters.nats.reading_publisher import AckedPublisher, OutgoingMessage, PublishStats
from adapters.nats.subjects import deadletter_subject
from config.settings import NatsSettings

_encoder = msgspec.json.Encoder()


class DeadLetter(Protocol):
    """A msgspec-encodable rejection that names where it came from (the subject's last token)."""

    @property
    def source(self) -> str | enum.Enum:
        """Origin of the input: a token such as ``decode``, or an enum (``Source.HTTP``)."""
        ...


def source_token(source: str | enum.Enum) -> str:
    """Subject token of a rejection's source: an enum member by its lower-cased name."""
    return source.name.lower() if isinstance(source, enum.Enum) else source


class MalformedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A READINGS message that could not be decoded as a ``MeterBatch``."""

    source: str = "decode"
    reason: str
    subject: str
    stream_sequence: int
    data: bytes
    """The message body as it was (base64 in the JSON)."""


class DeadLetterPublisher:
    """Publishes rejections as JSON to ``hes.deadletter.readings.<source>`` with JetStream acks."""

    def __init__(
        self,
        nc: NatsClient,
        nats: NatsSettings,
        *,
        ack_timeout: float = 2.0,
        max_attempts: int = 4,
    ) -> None:
        self._prefix = nats.prefix
        self._publisher = AckedPublisher(
            nc,
            max_in_flight=nats.publish_max_in_flight,
            ack_timeout=ack_timeout,
            max_attempts=max_attempts,
        )

    @property
    def stats(self) -> PublishStats:
        """Counters since this publisher was created."""
        return self._publisher.stats

    async def reject(self, rejections: Sequence[DeadLetter]) -> None:
        """Store every rejection; raise ``BackPressure`` unless JetStream acknowledged them all."""
        messages = [
            OutgoingMessage(
                deadletter_subject(self._prefix, source_token(rejection.source)),
                _encoder.encode(rejection),
                # One id per rejection, kept across re-sends: retries dedupe, rejections do not.
                uuid.uuid4().hex,
            )
            for rejection in rejections
        ]
        if messages:
            await self._publisher.publish_all(messages)
