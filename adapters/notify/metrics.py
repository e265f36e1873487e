"""Prometheus metrics of notification deliveries (labels carry no URLs or addresses)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DELIVERIES = Counter(
    "hes_notification_deliveries_total",
    "Notifications finished, by channel and outcome (delivered or failed)",
    ["channel", "outcome"],
)
ATTEMPTS = Counter(
    "hes_notification_attempts_total",
    "Delivery attempts, by channel and verdict (SUCCESS, RETRY, PERMANENT)",
    ["channel", "verdict"],
)
ATTEMPT_SECONDS = Histogram(
    "hes_notification_attempt_seconds",
    "Duration of one webhook call or SMTP session",
    ["channel"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUED = Counter(
    "hes_notification_queued_total",
    "Deliveries created from alert and tariff events, by channel",
    ["channel"],
)
UNMATCHED = Counter(
    "hes_notification_events_unindexed_total",
    "Alert or tariff events skipped because the notifier never saw their first event",
)
