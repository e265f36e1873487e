"""NATS subject names of the reading pipeline, for a deployment prefix (naming lives here only)."""

from __future__ import annotations

from uuid import UUID

INGEST_QUEUE_GROUP = "hes-ingest"
"""Queue group of the ingest listeners: each gateway message goes to one listener."""


def subject_prefix(prefix: str) -> str:
    """The subject prefix of a deployment prefix: ``""`` or ``"<prefix lower-cased>."``."""
    return f"{prefix.lower()}." if prefix else ""


def reading_subject(prefix: str, partition: int, meter: UUID) -> str:
    """Subject of one meter's batches: ``[prefix.]hes.readings.<partition>.<meter hex>``."""
    return f"{subject_prefix(prefix)}hes.readings.{partition}.{meter.hex}"


def partition_filter(prefix: str, partition: int) -> str:
    """Filter subject of one partition's consumer: ``[prefix.]hes.readings.<partition>.*``."""
    return f"{subject_prefix(prefix)}hes.readings.{partition}.*"


def live_subject(prefix: str, meter: UUID | None) -> str:
    """Core-NATS subject seeing one meter's batches in any partition, or every meter's if None."""
    if meter is None:
        return f"{subject_prefix(prefix)}hes.readings.>"
    return f"{subject_prefix(prefix)}hes.readings.*.{meter.hex}"


def deadletter_subject(prefix: str, source: str) -> str:
    """Subject of rejections from ``source``: ``[prefix.]hes.deadletter.readings.<source>``."""
    if not source or not all(c.isalnum() or c in "-_" for c in source):
        raise ValueError(f"dead-letter source {source!r}: letters, digits, '-' and '_' only")
    return f"{subject_prefix(prefix)}hes.deadletter.readings.{source}"


def ingest_subject_wildcard(prefix: str) -> str:
    """Subjects gateways publish reading batches to: ``[prefix.]hes.ingest.>``."""
    return f"{subject_prefix(prefix)}hes.ingest.>"


def event_subject(prefix: str, aggregate: str, event_name: str) -> str:
    """Subject of a relayed domain event: ``[prefix.]hes.events.<aggregate>.<EventName>``."""
    return f"{subject_prefix(prefix)}hes.events.{aggregate}.{event_name}"


def event_filter(prefix: str, pattern: str = ">") -> str:
    """Filter subject for relayed events, e.g. ``meter.*`` → ``[prefix.]hes.events.meter.*``."""
    tokens = pattern.split(".") if pattern else []
    if not tokens or any(not t or " " in t for t in tokens) or ">" in tokens[:-1]:
        raise ValueError(f"event filter {pattern!r}: dot-separated tokens, '*' or a final '>'")
    return f"{subject_prefix(prefix)}hes.events.{pattern}"
