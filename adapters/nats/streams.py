"""JetStream streams the head-end owns, created or updated idempotently."""

from __future__ import annotations

import contextlib

import msgspec
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError


class StreamSpec(msgspec.Struct, frozen=True):
    """Name, subjects and limits of one stream (before the deployment prefix)."""

    name: str
    subjects: list[str]
    max_age_seconds: float
    duplicate_window_seconds: float = 120.0


STREAMS = [
    StreamSpec("READINGS", ["hes.readings.>"], max_age_seconds=7 * 86400),
    StreamSpec("HES_EVENTS", ["hes.events.>", "hes.exports.>"], max_age_seconds=0),
    StreamSpec("HES_DEADLETTER", ["hes.deadletter.>"], max_age_seconds=30 * 86400),
]


def prefixed(prefix: str, spec: StreamSpec, replicas: int = 1) -> StreamConfig:
    """Stream configuration with the deployment's name and subject prefix applied."""
    subject_prefix = f"{prefix.lower()}." if prefix else ""
    return StreamConfig(
        name=f"{prefix}{spec.name}",
        subjects=[subject_prefix + s for s in spec.subjects],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=spec.max_age_seconds,
        duplicate_window=spec.duplicate_window_seconds,
        num_replicas=replicas,
    )


async def ensure_streams(js: JetStreamContext, prefix: str = "", replicas: int = 1) -> list[str]:
    """Create missing streams and update changed ones (replicas too); return their names."""
    names = []
    for spec in STREAMS:
        config = prefixed(prefix, spec, replicas)
        try:
            await js.stream_info(config.name or "")
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
        names.append(config.name or "")
    return names


async def delete_streams(js: JetStreamContext, prefix: str) -> None:
    """Delete this prefix's streams (test isolation clean-up)."""
    for spec in STREAMS:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(f"{prefix}{spec.name}")
