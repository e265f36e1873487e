"""Stored domain events as CloudEvents 1.0 JSON messages (structured mode) for HES_EVENTS.

The CloudEvents ``id`` is deterministic: ``uuid5(EVENT_NAMESPACE, "<originator_id>:<version>")``,
so the same stored event always gets the same id (and ``Nats-Msg-Id``), however often it is
relayed. ``data`` holds the event's own fields exactly as the event store encoded them (msgspec
JSON, spliced in without re-encoding); the command metadata is carried by the ``actor`` and
``correlationid`` extension attributes instead, and the library's bookkeeping (timestamp, topic,
class version) by ``time`` and ``type``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, NamedTuple
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.utils import resolve_topic
from msgspec import Meta

from adapters.nats.subjects import event_subject
from domain.meta import EventMeta

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
EVENT_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:event")
"""Namespace of the deterministic CloudEvents ids."""

NON_DATA_KEYS = frozenset(
    {
        "originator_id",
        "originator_version",
        "timestamp",
        "originator_topic",
        "class_version",
        "meta",
        # customers' personal data, sealed under their data keys: never relayed (see
        # docs/customers.md); subscribers read it through the API, where roles apply
        "sealed",
    }
)
"""Stored keys that are not part of ``data`` (they travel as envelope attributes, or not at all)."""


class CloudEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A CloudEvents 1.0 envelope as HES publishes it (extensions: lower-case alphanumerics)."""

    specversion: Annotated[str, Meta(pattern=r"^1\.0$")]
    id: Annotated[str, Meta(extra_json_schema={"format": "uuid"})]
    source: Annotated[str, Meta(extra_json_schema={"format": "uri"})]
    type: Annotated[str, Meta(pattern=r"^hes\.[a-z]+\.[A-Za-z]+\.v[0-9]+$")]
    subject: Annotated[str, Meta(description="Aggregate id (UUID) the event belongs to")]
    time: Annotated[datetime, Meta(extra_json_schema={"format": "date-time"})]
    datacontenttype: Annotated[str, Meta(pattern=r"^application/json$")]
    position: Annotated[
        int, Meta(ge=1, description="Position (notification id) in the event store's log")
    ]
    aggregateversion: Annotated[
        int, Meta(ge=1, description="Version of the aggregate this event made (1 = created)")
    ]
    actor: Annotated[str | None, Meta(description="Who issued the command")] = None
    correlationid: Annotated[str | None, Meta(description="Request that caused the command")] = None
    data: dict[str, msgspec.Raw]


class EventType(NamedTuple):
    """Where an event class sits in the CloudEvents naming."""

    aggregate: str
    """Lower-case aggregate name, e.g. ``meter``."""
    name: str
    """Event class name, e.g. ``Registered``."""

    def type_name(self, version: int) -> str:
        """CloudEvents ``type`` at a class version, e.g. ``hes.meter.Registered.v1``."""
        return f"hes.{self.aggregate}.{self.name}.v{version}"


class OutgoingEvent(NamedTuple):
    """One relayed message: NATS subject, CloudEvents JSON body, ``Nats-Msg-Id``."""

    subject: str
    payload: bytes
    msg_id: str


_encoder = msgspec.json.Encoder()
_state_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_time_decoder = msgspec.json.Decoder(datetime)
_meta_decoder = msgspec.json.Decoder(EventMeta)
_version_decoder = msgspec.json.Decoder(int)


def event_id(originator_id: UUID, originator_version: int) -> UUID:
    """Deterministic CloudEvents id of an aggregate's event at a version."""
    return uuid5(EVENT_NAMESPACE, f"{originator_id}:{originator_version}")


def default_source(deployment: str) -> str:
    """CloudEvents ``source`` of a deployment: ``urn:hes:<deployment>``."""
    return f"urn:hes:{deployment}"


def event_type_of_class(cls: type) -> EventType:
    """Aggregate and event name of an event class nested in its aggregate (``Meter.Registered``)."""
    parts = cls.__qualname__.split(".")
    if len(parts) != 2:
        raise ValueError(f"event class {cls.__qualname__} is not nested in an aggregate class")
    return EventType(parts[0].lower(), parts[1])


@cache
def event_type_of_topic(topic: str) -> EventType:
    """Aggregate and event name of a stored event's topic."""
    return event_type_of_class(resolve_topic(topic))


def to_cloudevent(
    *,
    position: int,
    originator_id: UUID,
    originator_version: int,
    topic: str,
    state: bytes,
    source: str,
) -> CloudEvent:
    """The CloudEvents envelope of one stored event (its state as msgspec JSON)."""
    stored = _state_decoder.decode(state)
    kind = event_type_of_topic(topic)
    version_raw = stored.get("class_version")
    version = 1 if version_raw is None else _version_decoder.decode(version_raw)
    meta_raw = stored.get("meta")
    meta = None if meta_raw is None else _meta_decoder.decode(meta_raw)
    return CloudEvent(
        specversion=SPEC_VERSION,
        id=str(event_id(originator_id, originator_version)),
        source=source,
        type=kind.type_name(version),
        subject=str(originator_id),
        time=_time_decoder.decode(stored["timestamp"]).astimezone(UTC),
        datacontenttype=CONTENT_TYPE,
        position=position,
        aggregateversion=originator_version,
        actor=None if meta is None else meta.actor,
        correlationid=None if meta is None else meta.correlation_id,
        data={k: v for k, v in stored.items() if k not in NON_DATA_KEYS},
    )


def outgoing_event(
    *,
    position: int,
    originator_id: UUID,
    originator_version: int,
    topic: str,
    state: bytes,
    source: str,
    prefix: str,
) -> OutgoingEvent:
    """The NATS message relaying one stored event to stream HES_EVENTS."""
    cloudevent = to_cloudevent(
        position=position,
        originator_id=originator_id,
        originator_version=originator_version,
        topic=topic,
        state=state,
        source=source,
    )
    kind = event_type_of_topic(topic)
    return OutgoingEvent(
        event_subject(prefix, kind.aggregate, kind.name),
        _encoder.encode(cloudevent),
        cloudevent.id,
    )


def decode_cloudevent(payload: bytes) -> dict[str, Any]:
    """A CloudEvents JSON message as a plain dict (for consumers and tests)."""
    result: dict[str, Any] = msgspec.json.decode(payload)
    return result
