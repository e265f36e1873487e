"""Typed settings, read from ``HES_*`` environment variables in this one place.

The settings come in sections, one per concern (database, NATS, readings, detectors, DLMS,
notifications, API, auth, logging, runtime); a component receives only the section it needs.
Each field's environment variable is its encoded name (``msgspec.field(name=...)``), and each
section checks its own fields.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

import msgspec
from msgspec import field

from domain.collection import ScheduleError, parse_schedules
from domain.dlms_profile import DEFAULT_PUSH_LAYOUT_TEXT, push_layout_problem
from domain.networks import Network, parse_networks
from domain.webhook_policy import WebhookPolicy

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}\Z")


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":<redacted>@", 1)


class SettingsError(ValueError):
    """A ``HES_*`` variable has a value that cannot be used."""


class Section(msgspec.Struct, frozen=True, kw_only=True):
    """One section of the settings; its fields are encoded under their ``HES_*`` names."""

    secrets: ClassVar[frozenset[str]] = frozenset()
    """Fields never shown (settings may end up in logs)."""

    def __repr__(self) -> str:
        """All fields, with secrets and URL passwords replaced."""
        shown = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is not None and (name in self.secrets or name.endswith("url")):
                value = "<redacted>" if name in self.secrets else _redact_url(str(value))
            shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    @classmethod
    def variables(cls) -> dict[str, msgspec.structs.FieldInfo]:
        """The section's fields by environment variable name."""
        return {f.encode_name: f for f in msgspec.structs.fields(cls)}


class DatabaseSettings(Section, frozen=True, kw_only=True):
    """PostgreSQL: the event store and the read models."""

    url: str | None = field(default=None, name="HES_DATABASE_URL")
    """PostgreSQL URL; ``None`` means: start embedded PostgreSQL under ``data_dir``."""
    schema: str = field(default="hes", name="HES_DB_SCHEMA")
    """PostgreSQL schema holding the event store and the read models."""

    def __post_init__(self) -> None:
        if not _SCHEMA_RE.match(self.schema):
            raise SettingsError(
                f"HES_DB_SCHEMA={self.schema!r}: must be a lower-case SQL identifier"
            )

    @property
    def embedded(self) -> bool:
        """True when the system must start its own PostgreSQL."""
        return self.url is None

    def eventsourcing_env(self) -> dict[str, str]:
        """Environment for the ``eventsourcing`` library's PostgreSQL persistence."""
        if self.url is None:
            raise SettingsError("database URL is not resolved yet")
        parts = urlsplit(self.url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise SettingsError(
                f"HES_DATABASE_URL: scheme must be postgresql://, got {parts.scheme!r}"
            )
        return {
            "PERSISTENCE_MODULE": "adapters.postgres_store:PostgresStore",
            "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "POSTGRES_SCHEMA": self.schema,
            # Every application, projection and relay has its own pool and a process holds
            # several, while PostgreSQL allows 100 connections by default: one kept open each,
            # up to four more under load, closed again when idle (adapters/postgres_store.py).
            "POSTGRES_POOL_SIZE": "1",
            "POSTGRES_MAX_OVERFLOW": "4",
            "POSTGRES_CONNECT_TIMEOUT": "5",
            "POSTGRES_PRE_PING": "y",
            "CREATE_TABLE": "n",
        }


class NatsSettings(Section, frozen=True, kw_only=True):
    """NATS JetStream: streams, subjects, publishing, relayed events."""

    url: str | None = field(default=None, name="HES_NATS_URL")
    """NATS URL; ``None`` means: start an embedded JetStream server under ``data_dir``."""
    prefix: str = field(default="", name="HES_NATS_PREFIX")
    """Prefix for stream names and subjects (used to isolate test runs)."""
    stream_replicas: int = field(default=1, name="HES_STREAM_REPLICAS")
    """Replicas of each JetStream stream (3 on a NATS cluster of three or more servers)."""
    publish_max_in_flight: int = field(default=4096, name="HES_PUBLISH_MAX_IN_FLIGHT")
    """Unacknowledged JetStream publishes allowed before the publisher pushes back."""
    event_source: str | None = field(default=None, name="HES_EVENT_SOURCE")
    """CloudEvents ``source`` of relayed events; default ``urn:hes:<db_schema>``."""

    def __post_init__(self) -> None:
        if not 1 <= self.stream_replicas <= 5:
            raise SettingsError("HES_STREAM_REPLICAS: must be between 1 and 5")
        if self.prefix and not re.fullmatch(r"[A-Za-z0-9_]+", self.prefix):
            raise SettingsError(f"HES_NATS_PREFIX={self.prefix!r}: letters, digits and '_' only")

    @property
    def servers(self) -> list[str]:
        """The URLs of ``HES_NATS_URL``: one server, or a cluster's servers separated by commas."""
        return [u.strip() for u in (self.url or "").split(",") if u.strip()]

    @property
    def embedded(self) -> bool:
        """True when the system must start its own NATS JetStream."""
        return self.url is None

    def stream(self, name: str) -> str:
        """JetStream stream name with this deployment's prefix."""
        return f"{self.prefix}{name}"

    def subject(self, subject: str) -> str:
        """NATS subject with this deployment's prefix."""
        return f"{self.prefix.lower()}.{subject}" if self.prefix else subject


class ReadingSettings(Section, frozen=True, kw_only=True):
    """Readings: ingest limits, the reading workers, retention, load percentages."""

    partitions: int = field(default=8, name="HES_READING_PARTITIONS")
    """Number of READINGS subject partitions (one durable consumer each)."""
    fetch_batch: int = field(default=256, name="HES_READING_FETCH_BATCH")
    """Most messages a reading worker writes in one transaction."""
    writers: int = field(default=2, name="HES_READING_WRITERS")
    """Transactions one reading-worker process writes at once (each serves some partitions)."""
    ack_wait_seconds: float = field(default=15.0, name="HES_READING_ACK_WAIT_SECONDS")
    """How long JetStream waits for a reading worker's ack before redelivering (kept alive
    while a write runs)."""
    lease_seconds: float = field(default=15.0, name="HES_READING_LEASE_SECONDS")
    """A worker's hold on a partition without renewal; a dead worker's ends with its session."""
    retention_raw_days: int = field(default=7, name="HES_RETENTION_RAW_DAYS")
    retention_1m_days: int = field(default=30, name="HES_RETENTION_1M_DAYS")
    retention_aggregate_days: int = field(default=90, name="HES_RETENTION_AGGREGATE_DAYS")
    """Retention of the 15- and 30-minute aggregates."""
    max_batch: int = field(default=10_000, name="HES_MAX_BATCH_READINGS")
    """Most readings accepted in one ingest request."""
    future_tolerance_seconds: float = field(default=300.0, name="HES_FUTURE_TOLERANCE_SECONDS")
    """How far ahead of the head-end's clock a reading's timestamp may be."""
    default_region_capacity_kw: float = field(
        default=10_000.0, name="HES_DEFAULT_REGION_CAPACITY_KW"
    )
    """Capacity assumed for a region with no configured capacity (load percentage)."""

    def __post_init__(self) -> None:
        if not 1 <= self.partitions <= 1024:
            raise SettingsError("HES_READING_PARTITIONS: must be between 1 and 1024")
        if not 1 <= self.writers <= 64 or not 1 <= self.fetch_batch <= 10_000:
            raise SettingsError("HES_READING_WRITERS 1..64 and HES_READING_FETCH_BATCH 1..10000")
        if not 1 <= self.ack_wait_seconds <= 3600:
            raise SettingsError("HES_READING_ACK_WAIT_SECONDS: must be between 1 and 3600")
        if not 2 <= self.lease_seconds <= 600:
            raise SettingsError("HES_READING_LEASE_SECONDS: must be between 2 and 600")
        if min(self.retention_raw_days, self.retention_1m_days, self.retention_aggregate_days) < 1:
            raise SettingsError("HES_RETENTION_*_DAYS: must be at least 1")


class DetectorSettings(Section, frozen=True, kw_only=True):
    """The detectors: overload, communication loss, consumption anomalies."""

    overload_threshold_pct: float = field(default=85.0, name="HES_OVERLOAD_THRESHOLD_PCT")
    """Regional load above which a 15-minute window counts towards an OVERLOAD alert."""
    overload_windows: int = field(default=3, name="HES_OVERLOAD_WINDOWS")
    """Windows above the threshold, within 30 minutes, that raise an OVERLOAD alert."""
    comm_interval_seconds: float = field(default=900.0, name="HES_COMM_INTERVAL_SECONDS")
    """Expected reporting interval of a meter."""
    comm_missed_intervals: int = field(default=3, name="HES_COMM_MISSED_INTERVALS")
    """Silent expected intervals after which a meter is offline (COMM_FAILURE alert)."""
    anomaly_spike_pct: float = field(default=100.0, name="HES_ANOMALY_SPIKE_PCT")
    """Rise above the meter's own baseline that is a consumption spike."""
    anomaly_drop_pct: float = field(default=50.0, name="HES_ANOMALY_DROP_PCT")
    """Fall below the meter's own baseline that is a consumption drop."""
    interval_seconds: float = field(default=15.0, name="HES_DETECTOR_INTERVAL_SECONDS")
    """How often the detectors look at the read models (in the reading workers)."""

    def __post_init__(self) -> None:
        if not 0 < self.overload_threshold_pct <= 1000 or not 1 <= self.overload_windows <= 3:
            raise SettingsError(
                "HES_OVERLOAD_THRESHOLD_PCT must be in (0, 1000] and HES_OVERLOAD_WINDOWS in 1..3"
            )
        if self.comm_interval_seconds < 1 or self.comm_missed_intervals < 1:
            raise SettingsError(
                "HES_COMM_INTERVAL_SECONDS and HES_COMM_MISSED_INTERVALS must be at least 1"
            )
        if self.anomaly_spike_pct <= 0 or not 0 < self.anomaly_drop_pct < 100:
            raise SettingsError(
                "HES_ANOMALY_SPIKE_PCT must be positive and HES_ANOMALY_DROP_PCT in (0, 100)"
            )
        if self.interval_seconds <= 0:
            raise SettingsError("HES_DETECTOR_INTERVAL_SECONDS must be positive")


class InsightSettings(Section, frozen=True, kw_only=True):
    """Consumption insights: how often the analysis runs and when its findings raise alerts."""

    interval_seconds: float = field(default=900.0, name="HES_INSIGHTS_INTERVAL_SECONDS")
    """How often the analysis runs (0: only on the ``analyze`` mutation)."""
    window_days: int = field(default=28, name="HES_INSIGHTS_WINDOW_DAYS")
    """Whole days of history each analysis looks at."""
    anomaly_alert_score: float = field(default=90.0, name="HES_INSIGHTS_ANOMALY_ALERT_SCORE")
    """A meter-day scoring at least this raises (or recurs) the meter's ANOMALY alert."""
    early_warning_pct: float = field(default=95.0, name="HES_INSIGHTS_EARLY_WARNING_PCT")
    """A region forecast above this % of capacity raises an early-warning alert (0: none)."""

    def __post_init__(self) -> None:
        if self.interval_seconds < 0 or not 14 <= self.window_days <= 91:
            raise SettingsError(
                "HES_INSIGHTS_INTERVAL_SECONDS must be >= 0 and HES_INSIGHTS_WINDOW_DAYS in 14..91"
            )
        if not 0 < self.anomaly_alert_score <= 100:
            raise SettingsError("HES_INSIGHTS_ANOMALY_ALERT_SCORE must be in (0, 100]")
        if self.early_warning_pct < 0:
            raise SettingsError("HES_INSIGHTS_EARLY_WARNING_PCT must be 0 (off) or positive")


class NotificationSettings(Section, frozen=True, kw_only=True):
    """Notifications: webhook destinations and secrets, retries, SMTP."""

    secrets: ClassVar[frozenset[str]] = frozenset({"key", "smtp_password"})

    key: str | None = field(default=None, name="HES_NOTIFICATION_KEY")
    """Key sealing webhook secrets (32 bytes, URL-safe base64); generated into data_dir if unset."""
    webhook_http_hosts: str = field(default="", name="HES_WEBHOOK_HTTP_HOSTS")
    """Comma-separated hosts webhook URLs may reach over plain http (otherwise https only)."""
    webhook_allowed_networks: str = field(default="", name="HES_WEBHOOK_ALLOWED_NETWORKS")
    """CIDR list of loopback/private/link-local/multicast networks webhooks may reach anyway."""
    max_attempts: int = field(default=3, name="HES_NOTIFICATION_MAX_ATTEMPTS")
    """Attempts per notification before it is marked failed."""
    backoff_seconds: float = field(default=10.0, name="HES_NOTIFICATION_BACKOFF_SECONDS")
    """Wait before the second attempt; each later wait is ``backoff_factor`` times longer."""
    backoff_factor: float = field(default=3.0, name="HES_NOTIFICATION_BACKOFF_FACTOR")
    timeout_seconds: float = field(default=10.0, name="HES_NOTIFICATION_TIMEOUT_SECONDS")
    """Limit of one webhook call or SMTP session."""
    concurrency: int = field(default=32, name="HES_NOTIFICATION_CONCURRENCY")
    """Notifications sent at the same time (each endpoint gets at most 4 of them)."""
    smtp_host: str | None = field(default=None, name="HES_SMTP_HOST")
    """SMTP server for e-mail notifications; unset: e-mail subscriptions are refused."""
    smtp_port: int = field(default=25, name="HES_SMTP_PORT")
    smtp_user: str | None = field(default=None, name="HES_SMTP_USER")
    smtp_password: str | None = field(default=None, name="HES_SMTP_PASSWORD")
    smtp_from: str = field(default="hes@localhost", name="HES_SMTP_FROM")
    smtp_starttls: bool = field(default=False, name="HES_SMTP_STARTTLS")

    def __post_init__(self) -> None:
        try:
            WebhookPolicy.parse(self.webhook_http_hosts, self.webhook_allowed_networks)
        except ValueError as exc:
            raise SettingsError(f"HES_WEBHOOK_ALLOWED_NETWORKS: {exc}") from None
        if not 1 <= self.max_attempts <= 20:
            raise SettingsError("HES_NOTIFICATION_MAX_ATTEMPTS: must be between 1 and 20")
        if not 1.0 <= self.backoff_factor <= 100.0:
            raise SettingsError("HES_NOTIFICATION_BACKOFF_FACTOR: must be between 1 and 100")
        if self.backoff_seconds < 0 or self.timeout_seconds <= 0:
            raise SettingsError("HES_NOTIFICATION_BACKOFF/TIMEOUT_SECONDS: must be positive")
        if not 1 <= self.concurrency <= 1024:
            raise SettingsError("HES_NOTIFICATION_CONCURRENCY: must be between 1 and 1024")

    @property
    def webhook_policy(self) -> WebhookPolicy:
        """Where webhooks may go (HES_WEBHOOK_HTTP_HOSTS, HES_WEBHOOK_ALLOWED_NETWORKS)."""
        return WebhookPolicy.parse(self.webhook_http_hosts, self.webhook_allowed_networks)


class DlmsSettings(Section, frozen=True, kw_only=True):
    """DLMS/COSEM: sessions, collection schedules, the push listener, model profiles, keys."""

    secrets: ClassVar[frozenset[str]] = frozenset({"master_key"})

    concurrency: int = field(default=64, name="HES_DLMS_CONCURRENCY")
    """DLMS sessions open at once across the fleet (collector and command executor)."""
    push_port: int = field(default=4059, name="HES_DLMS_PUSH_PORT")
    """TCP port (on ``HES_HOST``) of the DLMS push listener; 0: run without one."""
    push_layout: str = field(default=DEFAULT_PUSH_LAYOUT_TEXT, name="HES_DLMS_PUSH_LAYOUT")
    """Registers after device name and clock in every push body: ``OBIS:scaler:unit,...``."""
    master_key: str | None = field(default=None, name="HES_DLMS_MASTER_KEY")
    """Key sealing meters' DLMS secrets (32 bytes, hex or base64); generated into data_dir."""
    schedule: str = field(default="registers=15m,profile=1d,events=1h", name="HES_DLMS_SCHEDULE")
    """Default collection intervals per task."""
    group_schedules: str = field(default="", name="HES_DLMS_GROUP_SCHEDULES")
    """Per meter group (area) overrides: ``Zone A:registers=5m,events=30m;Zone B:profile=6h``."""
    timeout_seconds: float = field(default=10.0, name="HES_DLMS_TIMEOUT_SECONDS")
    """Limit of one DLMS request/response exchange (and of connecting)."""
    retries: int = field(default=2, name="HES_DLMS_RETRIES")
    """Extra attempts of a failed DLMS session (with backoff) before it counts as failed."""
    profile_days: int = field(default=7, name="HES_DLMS_PROFILE_DAYS")
    """How far back the load-profile ledger expects intervals (gaps inside are caught up)."""
    system_title: str = field(default="4845534845530001", name="HES_DLMS_SYSTEM_TITLE")
    """The head-end's DLMS system title (8 bytes hex) for ciphered associations."""
    profile_dir: Path | None = field(default=None, name="HES_DLMS_PROFILE_DIR")
    """Directory of DLMS model profiles (``*.toml``/``*.json``) added to the built-in ones."""
    default_profile: str = field(default="idis", name="HES_DLMS_DEFAULT_PROFILE")
    """The model profile of meters that neither have one assigned nor match one."""

    def __post_init__(self) -> None:
        problem = push_layout_problem(self.push_layout)
        if problem is not None:
            raise SettingsError(f"HES_DLMS_PUSH_LAYOUT: {problem}")
        if not 1 <= self.concurrency <= 10_000 or not 0 <= self.retries <= 10:
            raise SettingsError("HES_DLMS_CONCURRENCY 1..10000 and HES_DLMS_RETRIES 0..10")
        if not 0 <= self.push_port < 65536 or self.timeout_seconds <= 0:
            raise SettingsError("HES_DLMS_PUSH_PORT 0..65535, HES_DLMS_TIMEOUT_SECONDS > 0")
        if not 1 <= self.profile_days <= 60:
            raise SettingsError("HES_DLMS_PROFILE_DAYS: must be between 1 and 60")
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", self.default_profile):
            raise SettingsError("HES_DLMS_DEFAULT_PROFILE: must be a profile name (a-z0-9._-)")
        if not re.fullmatch(r"[0-9A-Fa-f]{16}", self.system_title):
            raise SettingsError("HES_DLMS_SYSTEM_TITLE: must be 16 hex digits (8 bytes)")
        try:
            parse_schedules(self.schedule, self.group_schedules)
        except ScheduleError as exc:
            raise SettingsError(f"HES_DLMS_SCHEDULE/HES_DLMS_GROUP_SCHEDULES: {exc}") from None


class ApiSettings(Section, frozen=True, kw_only=True):
    """The HTTP API: its port, request limits, proxies, caches, read-your-writes, metrics."""

    secrets: ClassVar[frozenset[str]] = frozenset({"metrics_token"})

    port: int = field(default=8000, name="HES_PORT")
    reuse_port: bool = field(default=False, name="HES_REUSE_PORT")
    """Bind the HTTP port with SO_REUSEPORT, so that several API processes share it."""
    https: bool = field(default=False, name="HES_HTTPS")
    """The API is reached over HTTPS (directly or via a proxy): send Strict-Transport-Security."""
    cors_origins: str = field(default="", name="HES_CORS_ORIGINS")
    """Comma-separated origins allowed to call the API from a browser (none by default)."""
    max_body_bytes: int = field(default=1024 * 1024, name="HES_MAX_BODY_BYTES")
    """Largest request body, except telemetry batches and CSV imports (their own limits)."""
    rate_limit_per_minute: int = field(default=1200, name="HES_RATE_LIMIT_PER_MINUTE")
    """Requests per minute per client address (Redis-backed when HES_REDIS_URL is set)."""
    trusted_proxies: str = field(default="", name="HES_TRUSTED_PROXIES")
    """CIDR list of reverse proxies whose X-Forwarded-For / Forwarded headers are believed."""
    redis_url: str | None = field(default=None, name="HES_REDIS_URL")
    """Redis URL; ``None`` means in-process caches and rate-limit stores."""
    metrics_token: str | None = field(default=None, name="HES_METRICS_TOKEN")
    """Bearer token ``/metrics`` requires (for the Prometheus scraper); unset: open."""
    dangerous_bulk_threshold: int = field(default=10, name="HES_DANGEROUS_BULK_THRESHOLD")
    """Relay disconnects of more meters than this in one command need explicit confirmation."""
    dangerous_per_hour: int = field(default=5, name="HES_DANGEROUS_PER_HOUR")
    """Dangerous commands (confirmed bulk disconnects, key changes) one actor may run per hour."""
    projection_wait_seconds: float = field(default=5.0, name="HES_PROJECTION_WAIT_SECONDS")
    """How long a mutation waits for its read model by default (read-your-writes)."""
    ready_max_lag: int = field(default=100, name="HES_READY_MAX_LAG")
    """Projection lag (events) above which ``/health/ready`` answers 503."""
    import_batch_size: int = field(default=500, name="HES_IMPORT_BATCH_SIZE")

    def __post_init__(self) -> None:
        if self.metrics_token is not None and len(self.metrics_token) < 16:
            raise SettingsError("HES_METRICS_TOKEN: must have at least 16 characters")
        if self.rate_limit_per_minute < 1:
            raise SettingsError("HES_RATE_LIMIT_PER_MINUTE: must be at least 1")
        try:
            parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise SettingsError(f"HES_TRUSTED_PROXIES: {exc}") from None
        if self.max_body_bytes < 1024:
            raise SettingsError("HES_MAX_BODY_BYTES: must be at least 1024")
        if self.dangerous_bulk_threshold < 1 or self.dangerous_per_hour < 1:
            raise SettingsError("HES_DANGEROUS_BULK_THRESHOLD/PER_HOUR: must be at least 1")
        for origin in self.cors_origin_list:
            if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d+)?", origin):
                raise SettingsError(
                    f"HES_CORS_ORIGINS: {origin!r} is not an origin (scheme://host[:port])"
                )
        if not 0 < self.port < 65536:
            raise SettingsError(f"HES_PORT={self.port}: must be between 1 and 65535")

    @property
    def cors_origin_list(self) -> list[str]:
        """The origins of ``HES_CORS_ORIGINS``, one per comma."""
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def trusted_proxy_networks(self) -> tuple[Network, ...]:
        """The networks of ``HES_TRUSTED_PROXIES`` (none: forwarded headers are ignored)."""
        return parse_networks(self.trusted_proxies)


class AuthSettings(Section, frozen=True, kw_only=True):
    """Authentication: the JWT secret, or an external identity provider's keys."""

    secrets: ClassVar[frozenset[str]] = frozenset({"jwt_secret"})

    jwt_secret: str | None = field(default=None, name="HES_JWT_SECRET")
    """HS256 signing secret; generated into ``data_dir`` when unset."""
    jwt_issuer: str = field(default="hes", name="HES_JWT_ISSUER")
    jwt_audience: str = field(default="hes-api", name="HES_JWT_AUDIENCE")
    jwt_jwks_url: str | None = field(default=None, name="HES_JWT_JWKS_URL")
    """JWKS URL of an external identity provider (RS256/ES256 tokens, keys cached 5 minutes)."""
    jwt_jwks_file: Path | None = field(default=None, name="HES_JWT_JWKS_FILE")
    """JWKS file of an external identity provider (re-read when it changes)."""
    jwt_roles_claim: str = field(default="roles", name="HES_JWT_ROLES_CLAIM")
    """Claim holding the roles list; dotted for nested claims, e.g. ``realm_access.roles``."""
    jwt_leeway_seconds: int = field(default=30, name="HES_JWT_LEEWAY_SECONDS")
    """Clock skew tolerated on ``exp``, ``nbf`` and ``iat``."""

    def __post_init__(self) -> None:
        if self.jwt_secret is not None and len(self.jwt_secret) < 32:
            raise SettingsError("HES_JWT_SECRET: must have at least 32 characters")
        if self.jwt_jwks_url is not None and self.jwt_jwks_file is not None:
            raise SettingsError("HES_JWT_JWKS_URL and HES_JWT_JWKS_FILE: set at most one")
        if self.jwt_jwks_url is not None and not self.jwt_jwks_url.startswith(
            ("https://", "http://127.0.0.1", "http://localhost")
        ):
            raise SettingsError("HES_JWT_JWKS_URL: must be https:// (or http on localhost)")
        if not 0 <= self.jwt_leeway_seconds <= 300:
            raise SettingsError("HES_JWT_LEEWAY_SECONDS: must be between 0 and 300")


class LoggingSettings(Section, frozen=True, kw_only=True):
    """Log records: format and level."""

    format: str = field(default="json", name="HES_LOG_FORMAT")
    """``json`` (one object per line, with correlation ids) or ``text``."""
    level: str = field(default="INFO", name="HES_LOG_LEVEL")

    def __post_init__(self) -> None:
        if self.format not in ("json", "text"):
            raise SettingsError(f"HES_LOG_FORMAT={self.format!r}: json or text")


class CustomerSettings(Section, frozen=True, kw_only=True):
    """Customer accounts: the key sealing their personal data, the meter-to-customer check."""

    secrets: ClassVar[frozenset[str]] = frozenset({"master_key"})

    master_key: str | None = field(default=None, name="HES_CUSTOMER_MASTER_KEY")
    """Key sealing customers' data keys (32 bytes, hex or base64); generated into data_dir."""
    links_checked: bool = field(default=True, name="HES_CUSTOMER_LINKS_CHECKED")
    """Meters are assigned only to existing, active customer accounts (docs/customers.md)."""


class RuntimeSettings(Section, frozen=True, kw_only=True):
    """The processes: where they keep data, which address they listen on, what ``hes up`` runs."""

    data_dir: Path = field(default=Path(".hes-data"), name="HES_DATA_DIR")
    host: str = field(default="127.0.0.1", name="HES_HOST")
    """Listen address of the HTTP API, the DLMS push listener and the metrics endpoints."""
    run_workers: bool = field(default=True, name="HES_RUN_WORKERS")
    """Run the projection workers inside ``hes up``; false for API-only replicas."""
    run_dlms: bool = field(default=True, name="HES_RUN_DLMS")
    """Run the DLMS collector, push listener and command executor inside ``hes up``."""
    metrics_port: int | None = field(default=None, name="HES_METRICS_PORT")
    """Port of a Prometheus endpoint for `hes workers run` started on its own."""


_S = TypeVar("_S", bound=Section)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the composition root needs to wire the system, one section per concern."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    nats: NatsSettings = field(default_factory=NatsSettings)
    readings: ReadingSettings = field(default_factory=ReadingSettings)
    detectors: DetectorSettings = field(default_factory=DetectorSettings)
    insights: InsightSettings = field(default_factory=InsightSettings)
    dlms: DlmsSettings = field(default_factory=DlmsSettings)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    customers: CustomerSettings = field(default_factory=CustomerSettings)

    @classmethod
    def sections(cls) -> dict[str, type[Section]]:
        """The section types by attribute name."""
        return {f.name: f.type for f in msgspec.structs.fields(cls)}

    @classmethod
    def variables(cls) -> dict[str, msgspec.structs.FieldInfo]:
        """Every setting's field by its environment variable name."""
        return {k: v for s in cls.sections().values() for k, v in s.variables().items()}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``HES_*`` variables (unset ones keep their defaults)."""
        env = os.environ if environ is None else environ
        return cls(
            database=_section_from_env(DatabaseSettings, env),
            nats=_section_from_env(NatsSettings, env),
            readings=_section_from_env(ReadingSettings, env),
            detectors=_section_from_env(DetectorSettings, env),
            insights=_section_from_env(InsightSettings, env),
            dlms=_section_from_env(DlmsSettings, env),
            notifications=_section_from_env(NotificationSettings, env),
            api=_section_from_env(ApiSettings, env),
            auth=_section_from_env(AuthSettings, env),
            logging=_section_from_env(LoggingSettings, env),
            runtime=_section_from_env(RuntimeSettings, env),
            customers=_section_from_env(CustomerSettings, env),
        )

    @classmethod
    def of(cls, **values: Any) -> Settings:
        """Defaults but for ``values``, named as their variables without ``HES_``."""
        return cls().replace(**values)

    def replace(self, **values: Any) -> Settings:
        """A copy with the given values, named as in ``of``; each changed section is checked."""
        sections = self.sections()
        owner = {
            key[4:].lower(): (name, f.name)
            for name, section in sections.items()
            for key, f in section.variables().items()
        }
        changes: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            if key not in owner:
                raise TypeError(f"{key!r} is not a setting (HES_{key.upper()} does not exist)")
            name, attr = owner[key]
            changes.setdefault(name, {})[attr] = value
        return msgspec.structs.replace(
            self,
            **{
                name: msgspec.structs.replace(getattr(self, name), **fields)
                for name, fields in changes.items()
            },
        )

    def with_urls(self, database_url: str, nats_url: str | None) -> Settings:
        """Return a copy with resolved server URLs (after embedded servers start)."""
        return self.replace(database_url=database_url, nats_url=nats_url)

    @property
    def events_source(self) -> str:
        """CloudEvents ``source`` attribute of this deployment's relayed events."""
        return self.nats.event_source or f"urn:hes:{self.database.schema}"


def _section_from_env(section: type[_S], env: Mapping[str, str]) -> _S:
    raw = {key: env[key] for key in section.variables() if env.get(key, "") != ""}
    try:
        return msgspec.convert(raw, section, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise SettingsError(_env_error(str(exc))) from exc


def _dec_hook(type_: type, obj: object) -> object:
    if type_ is Path and isinstance(obj, str):
        return Path(obj)
    # msgspec's dec_hook protocol: NotImplementedError means "no conversion for this type".
    raise NotImplementedError(type_)


def _env_error(message: str) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.HES_PORT`": name the variable first.
    match = re.search(r"at `\$\.(HES_\w+)`", message)
    if match:
        return f"{match.group(1)}: {message.split(' - at')[0]}"
    return message
