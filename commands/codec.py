"""msgspec encoding of stored events: typed decode, no per-value transcoding hooks."""

from __future__ import annotations

import typing
from functools import cache
from typing import Any, ClassVar, TypedDict, TypeVar
from uuid import UUID

import msgspec
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.utils import get_topic, resolve_topic

_KEYS_IN_COLUMNS = frozenset({"originator_id", "originator_version"})
_encoder = msgspec.json.Encoder()


class NullTranscoder(Transcoder):
    """Placeholder the base ``Mapper`` wants; the msgspec mapper encodes by itself."""

    def encode(self, obj: Any) -> bytes:
        """Encode with msgspec (kept for API completeness)."""
        return _encoder.encode(obj)

    def decode(self, data: bytes) -> Any:
        """Decode untyped JSON (kept for API completeness)."""
        return msgspec.json.decode(data)


class MsgspecMapper(Mapper[UUID]):
    """Maps domain events to stored events as compact JSON, decoded against the event's types."""

    def __init__(self) -> None:
        super().__init__(transcoder=NullTranscoder())

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        """Encode an event's state (all but id and version, which have their own columns)."""
        cls = type(domain_event)
        state = {k: v for k, v in vars(domain_event).items() if k not in _KEYS_IN_COLUMNS}
        class_version = getattr(cls, "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=get_topic(cls),
            state=_encoder.encode(state),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        """Rebuild an event object from its stored JSON with the right Python types."""
        cls = resolve_topic(stored_event.topic)
        try:
            raw = msgspec.json.decode(stored_event.state)
            from_version = raw.pop("class_version", 1)
            class_version = getattr(cls, "class_version", 1)
            while from_version < class_version:
                getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(raw)
                from_version += 1
            state: dict[str, Any] = msgspec.convert(raw, state_type(cls), strict=False)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise MapperDeserialisationError(
                f"event {stored_event.topic} v{stored_event.originator_version} of "
                f"{stored_event.originator_id}: {exc}"
            ) from exc
        originator_id = stored_event.originator_id
        state["originator_id"] = (
            originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
        )
        state["originator_version"] = stored_event.originator_version
        domain_event = object.__new__(cls)
        object.__setattr__(domain_event, "__dict__", state)
        return typing.cast(DomainEventProtocol[UUID], domain_event)


@cache
def state_type(cls: type) -> type:
    """A TypedDict of an event class's stored fields, for msgspec to decode into."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {
        name: hint
        for name, hint in hints.items()
        if name not in _KEYS_IN_COLUMNS
        and typing.get_origin(hint) is not ClassVar
        and not isinstance(hint, TypeVar)
    }
    return typing.cast(type, TypedDict(f"{cls.__qualname__}State", fields))  # type: ignore[operator]
