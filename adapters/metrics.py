"""Prometheus metrics of the reading pipeline and the API (one registry per process)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

# Latencies span from milliseconds (ingest → commit) to hours (late meter data).
_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
    3600,
    86400,
)

READINGS_ACCEPTED = Counter(
    "hes_readings_accepted_total", "Readings accepted at ingest and published", ["source"]
)
READINGS_REJECTED = Counter(
    "hes_readings_rejected_total", "Readings rejected at ingest (dead-lettered)", ["source", "rule"]
)
READINGS_STORED = Counter(
    "hes_readings_stored_total", "Readings newly inserted into the raw table by reading workers"
)
READINGS_DUPLICATE = Counter(
    "hes_readings_duplicate_total", "Readings a worker received again and ignored"
)
WRITE_BATCHES = Counter("hes_reading_write_batches_total", "Transactions committed by workers")
WRITE_SECONDS = Histogram(
    "hes_reading_write_seconds", "Duration of one worker transaction (COPY + aggregates)"
)
LATENCY_METER = Histogram(
    "hes_reading_latency_meter_seconds",
    "Meter timestamp to committed in the read model",
    buckets=_LATENCY_BUCKETS,
)
LATENCY_INGEST = Histogram(
    "hes_reading_latency_ingest_seconds",
    "Accepted by the head-end to committed in the read model",
    buckets=_LATENCY_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "hes_reading_consumer_lag",
    "Messages pending on the READINGS consumers",
    multiprocess_mode="max",  # every worker process sees the same consumers
)
PUBLISH_BACK_PRESSURE = Counter(
    "hes_publish_back_pressure_total", "Publishes refused because JetStream did not keep up"
)


class _IngestOutcome(Protocol):
    @property
    def accepted(self) -> int: ...

    @property
    def errors(self) -> Sequence[_RuleError]: ...


class _RuleError(Protocol):
    @property
    def rule(self) -> str: ...


def record_ingest_metrics(result: _IngestOutcome, source: str) -> None:
    """Count accepted and rejected readings of one ingest call by source (and rule)."""
    READINGS_ACCEPTED.labels(source).inc(result.accepted)
    for error in result.errors:
        READINGS_REJECTED.labels(source, error.rule).inc()


EVENT_RELAY_LAG = Gauge(
    "hes_event_relay_lag",
    "Events recorded in the event store but not yet relayed to HES_EVENTS",
    ["application"],
    multiprocess_mode="max",  # one relay per deployment; any process may run it
)
EVENT_RELAY_PUBLISHED = Counter(
    "hes_event_relay_published_total",
    "Domain events relayed to HES_EVENTS and acknowledged (re-sends after a restart included)",
    ["application"],
)
EVENT_RELAY_OUT_OF_ORDER = Counter(
    "hes_event_relay_out_of_order_total",
    "Relayed events JetStream stored before an earlier position (only after a failed publish)",
    ["application"],
)

ACCESS_DENIED = Counter(
    "hes_access_denied_total",
    "Refused requests: unauthenticated, forbidden, unconfirmed or rate-limited (no caller data)",
    ["interface", "target", "reason"],
)
DLMS_PUSHES = Counter(
    "hes_dlms_pushes_total",
    "DLMS data-notifications received by the push listener, by outcome (accepted or the rule "
    "that rejected them)",
    ["outcome"],
)
DLMS_SESSIONS = Counter(
    "hes_dlms_sessions_total", "DLMS session attempts with meters, by outcome", ["outcome"]
)

PROJECTION_FAILURES = Counter(
    "hes_projection_failures_total",
    "Failed attempts of a projection, relay or notifier to apply an event (each retry counts)",
    ["projection"],
)
PROJECTION_STALLED = Gauge(
    "hes_projection_stalled",
    "1 while a projection, relay or notifier is stuck (failing, retrying with backoff)",
    ["projection"],
    multiprocess_mode="livemax",  # a stopped process no longer says anything
)
CHILD_RESTARTS = Counter(
    "hes_child_restarts_total",
    "Restarts of a child process (reading workers, DLMS) or an embedded server by `hes up`",
    ["child"],
)
