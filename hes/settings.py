"""Typed settings, read from ``HES_*`` environment variables in this one place."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

import msgspec

from adapters.dlms.push_layout import DEFAULT_PUSH_LAYOUT_TEXT, PushLayout, PushLayoutError
from domain.collection import ScheduleError, parse_schedules

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}\Z")


_SECRET_FIELDS = frozenset(
    {"jwt_secret", "smtp_password", "notification_key", "dlms_master_key", "metrics_token"}
)


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":<redacted>@", 1)


class SettingsError(ValueError):
    """A ``HES_*`` variable has a value that cannot be used."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the composition root needs to wire the system."""

    database_url: str | None = None
    """PostgreSQL URL; ``None`` means: start embedded PostgreSQL under ``data_dir``."""
    nats_url: str | None = None
    """NATS URL; ``None`` means: start an embedded JetStream server under ``data_dir``."""
    redis_url: str | None = None
    """Redis URL; ``None`` means in-process caches and rate-limit stores."""
    db_schema: str = "hes"
    """PostgreSQL schema holding the event store and the read models."""
    nats_prefix: str = ""
    """Prefix for stream names and subjects (used to isolate test runs)."""
    data_dir: Path = Path(".hes-data")
    host: str = "127.0.0.1"
    port: int = 8000
    jwt_secret: str | None = None
    """HS256 signing secret; generated into ``data_dir`` when unset."""
    jwt_issuer: str = "hes"
    jwt_audience: str = "hes-api"
    jwt_jwks_url: str | None = None
    """JWKS URL of an external identity provider (RS256/ES256 tokens, keys cached 5 minutes)."""
    jwt_jwks_file: Path | None = None
    """JWKS file of an external identity provider (re-read when it changes)."""
    jwt_roles_claim: str = "roles"
    """Claim holding the roles list; dotted for nested claims, e.g. ``realm_access.roles``."""
    jwt_leeway_seconds: int = 30
    """Clock skew tolerated on ``exp``, ``nbf`` and ``iat``."""
    cors_origins: str = ""
    """Comma-separated origins allowed to call the API from a browser (none by default)."""
    https: bool = False
    """The API is reached over HTTPS (directly or via a proxy): send Strict-Transport-Security."""
    max_body_bytes: int = 1024 * 1024
    """Largest request body, except telemetry batches and CSV imports (their own limits)."""
    dangerous_bulk_threshold: int = 10
    """Relay disconnects of more meters than this in one command need explicit confirmation."""
    dangerous_per_hour: int = 5
    """Dangerous commands (confirmed bulk disconnects, key changes) one actor may run per hour."""
    log_format: str = "json"
    """``json`` (one object per line, with correlation ids) or ``text``."""
    projection_wait_seconds: float = 5.0
    """How long a mutation waits for its read model by default (read-your-writes)."""
    ready_max_lag: int = 100
    """Projection lag (events) above which ``/health/ready`` answers 503."""
    import_batch_size: int = 500
    rate_limit_per_minute: int = 1200
    """Requests per minute per client address (Redis-backed when HES_REDIS_URL is set)."""
    metrics_token: str | None = None
    """Bearer token ``/metrics`` requires (for the Prometheus scraper); unset: open."""
    reading_partitions: int = 8
    """Number of READINGS subject partitions (one durable consumer each)."""
    retention_raw_days: int = 7
    retention_1m_days: int = 30
    retention_aggregate_days: int = 90
    """Retention of the 15- and 30-minute aggregates."""
    default_region_capacity_kw: float = 10_000.0
    """Capacity assumed for a region with no configured capacity (load percentage)."""
    max_batch_readings: int = 10_000
    """Most readings accepted in one ingest request."""
    future_tolerance_seconds: float = 300.0
    """How far ahead of the head-end's clock a reading's timestamp may be."""
    reading_fetch_batch: int = 256
    """Messages a reading worker fetches per round."""
    publish_max_in_flight: int = 4096
    """Unacknowledged JetStream publishes allowed before the publisher pushes back."""
    metrics_port: int | None = None
    """Port of a Prometheus endpoint for `hes workers run` started on its own."""
    run_workers: bool = True
    """Run the projection workers inside ``hes up``; false for API-only replicas."""
    event_source: str | None = None
    """CloudEvents ``source`` of relayed events; default ``urn:hes:<db_schema>``."""
    log_level: str = "INFO"
    overload_threshold_pct: float = 85.0
    """Regional load above which a 15-minute window counts towards an OVERLOAD alert."""
    overload_windows: int = 3
    """Windows above the threshold, within 30 minutes, that raise an OVERLOAD alert."""
    comm_interval_seconds: float = 900.0
    """Expected reporting interval of a meter."""
    comm_missed_intervals: int = 3
    """Silent expected intervals after which a meter is offline (COMM_FAILURE alert)."""
    anomaly_spike_pct: float = 100.0
    """Rise above the meter's own baseline that is a consumption spike."""
    anomaly_drop_pct: float = 50.0
    """Fall below the meter's own baseline that is a consumption drop."""
    detector_interval_seconds: float = 15.0
    """How often the detectors look at the read models (in the reading workers)."""
    notification_key: str | None = None
    """Key sealing webhook secrets (32 bytes, URL-safe base64); generated into data_dir if unset."""
    notification_allow_http: bool = False
    """Allow plain-http webhook URLs to hosts other than localhost."""
    notification_max_attempts: int = 3
    """Attempts per notification before it is marked failed."""
    notification_backoff_seconds: float = 10.0
    """Wait before the second attempt; each later wait is ``backoff_factor`` times longer."""
    notification_backoff_factor: float = 3.0
    notification_timeout_seconds: float = 10.0
    """Limit of one webhook call or SMTP session."""
    notification_concurrency: int = 32
    """Notifications sent at the same time (each endpoint gets at most 4 of them)."""
    smtp_host: str | None = None
    """SMTP server for e-mail notifications; unset: e-mail subscriptions are refused."""
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "hes@localhost"
    smtp_starttls: bool = False
    dlms_concurrency: int = 64
    """DLMS sessions open at once across the fleet (collector and command executor)."""
    dlms_push_port: int = 4059
    """TCP port (on ``HES_HOST``) of the DLMS push listener (wrapper data-notifications)."""
    dlms_push_layout: str = DEFAULT_PUSH_LAYOUT_TEXT
    """Registers after device name and clock in every push body: ``OBIS:scaler:unit,...``."""
    dlms_master_key: str | None = None
    """Key sealing meters' DLMS secrets (32 bytes, hex or base64); generated into data_dir."""
    dlms_schedule: str = "registers=15m,profile=1d,events=1h"
    """Default collection intervals per task."""
    dlms_group_schedules: str = ""
    """Per meter group (area) overrides: ``Zone A:registers=5m,events=30m;Zone B:profile=6h``."""
    dlms_timeout_seconds: float = 10.0
    """Limit of one DLMS request/response exchange (and of connecting)."""
    dlms_retries: int = 2
    """Extra attempts of a failed DLMS session (with backoff) before it counts as failed."""
    dlms_profile_days: int = 7
    """How far back the load-profile ledger expects intervals (gaps inside are caught up)."""
    dlms_system_title: str = "4845534845530001"
    """The head-end's DLMS system title (8 bytes hex) for ciphered associations."""
    run_dlms: bool = True
    """Run the DLMS collector, push listener and command executor inside ``hes up``."""

    def __repr__(self) -> str:
        """All fields, with secrets and URL passwords replaced (settings may end up in logs)."""
        shown = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is not None and (name in _SECRET_FIELDS or name.endswith("_url")):
                value = "<redacted>" if name in _SECRET_FIELDS else _redact_url(str(value))
            shown.append(f"{name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def __post_init__(self) -> None:
        if not _SCHEMA_RE.match(self.db_schema):
            raise SettingsError(
                f"HES_DB_SCHEMA={self.db_schema!r}: must be a lower-case SQL identifier"
            )
        if not 1 <= self.reading_partitions <= 1024:
            raise SettingsError("HES_READING_PARTITIONS: must be between 1 and 1024")
        if min(self.retention_raw_days, self.retention_1m_days, self.retention_aggregate_days) < 1:
            raise SettingsError("HES_RETENTION_*_DAYS: must be at least 1")
        if self.jwt_secret is not None and len(self.jwt_secret) < 32:
            raise SettingsError("HES_JWT_SECRET: must have at least 32 characters")
        if self.metrics_token is not None and len(self.metrics_token) < 16:
            raise SettingsError("HES_METRICS_TOKEN: must have at least 16 characters")
        try:
            PushLayout.parse(self.dlms_push_layout)
        except PushLayoutError as exc:
            raise SettingsError(f"HES_DLMS_PUSH_LAYOUT: {exc}") from None
        if self.rate_limit_per_minute < 1:
            raise SettingsError("HES_RATE_LIMIT_PER_MINUTE: must be at least 1")
        if self.jwt_jwks_url is not None and self.jwt_jwks_file is not None:
            raise SettingsError("HES_JWT_JWKS_URL and HES_JWT_JWKS_FILE: set at most one")
        if self.jwt_jwks_url is not None and not self.jwt_jwks_url.startswith(
            ("https://", "http://127.0.0.1", "http://localhost")
        ):
            raise SettingsError("HES_JWT_JWKS_URL: must be https:// (or http on localhost)")
        if not 0 <= self.jwt_leeway_seconds <= 300:
            raise SettingsError("HES_JWT_LEEWAY_SECONDS: must be between 0 and 300")
        if self.max_body_bytes < 1024:
            raise SettingsError("HES_MAX_BODY_BYTES: must be at least 1024")
        if self.dangerous_bulk_threshold < 1 or self.dangerous_per_hour < 1:
            raise SettingsError("HES_DANGEROUS_BULK_THRESHOLD/PER_HOUR: must be at least 1")
        if self.log_format not in ("json", "text"):
            raise SettingsError(f"HES_LOG_FORMAT={self.log_format!r}: json or text")
        for origin in self.cors_origin_list:
            if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d+)?", origin):
                raise SettingsError(
                    f"HES_CORS_ORIGINS: {origin!r} is not an origin (scheme://host[:port])"
                )
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
        if self.detector_interval_seconds <= 0:
            raise SettingsError("HES_DETECTOR_INTERVAL_SECONDS must be positive")
        if not 0 < self.port < 65536:
            raise SettingsError(f"HES_PORT={self.port}: must be between 1 and 65535")
        if not 1 <= self.notification_max_attempts <= 20:
            raise SettingsError("HES_NOTIFICATION_MAX_ATTEMPTS: must be between 1 and 20")
        if not 1.0 <= self.notification_backoff_factor <= 100.0:
            raise SettingsError("HES_NOTIFICATION_BACKOFF_FACTOR: must be between 1 and 100")
        if self.notification_backoff_seconds < 0 or self.notification_timeout_seconds <= 0:
            raise SettingsError("HES_NOTIFICATION_BACKOFF/TIMEOUT_SECONDS: must be positive")
        if not 1 <= self.notification_concurrency <= 1024:
            raise SettingsError("HES_NOTIFICATION_CONCURRENCY: must be between 1 and 1024")
        if not 1 <= self.dlms_concurrency <= 10_000 or not 0 <= self.dlms_retries <= 10:
            raise SettingsError("HES_DLMS_CONCURRENCY 1..10000 and HES_DLMS_RETRIES 0..10")
        if not 0 < self.dlms_push_port < 65536 or self.dlms_timeout_seconds <= 0:
            raise SettingsError("HES_DLMS_PUSH_PORT 1..65535, HES_DLMS_TIMEOUT_SECONDS > 0")
        if not 1 <= self.dlms_profile_days <= 60:
            raise SettingsError("HES_DLMS_PROFILE_DAYS: must be between 1 and 60")
        if not re.fullmatch(r"[0-9A-Fa-f]{16}", self.dlms_system_title):
            raise SettingsError("HES_DLMS_SYSTEM_TITLE: must be 16 hex digits (8 bytes)")
        try:
            parse_schedules(self.dlms_schedule, self.dlms_group_schedules)
        except ScheduleError as exc:
            raise SettingsError(f"HES_DLMS_SCHEDULE/HES_DLMS_GROUP_SCHEDULES: {exc}") from None
        if self.nats_prefix and not re.fullmatch(r"[A-Za-z0-9_]+", self.nats_prefix):
            raise SettingsError(
                f"HES_NATS_PREFIX={self.nats_prefix!r}: letters, digits and '_' only"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``HES_*`` variables (unset ones keep their defaults)."""
        env = os.environ if environ is None else environ
        raw: dict[str, object] = {}
        for field in msgspec.structs.fields(cls):
            key = "HES_" + field.name.upper()
            if key in env and env[key] != "":
                raw[field.name] = env[key]
        try:
            return msgspec.convert(raw, cls, strict=False, dec_hook=_dec_hook)
        except msgspec.ValidationError as exc:
            raise SettingsError(_env_error(str(exc))) from exc

    @property
    def cors_origin_list(self) -> list[str]:
        """The origins of ``HES_CORS_ORIGINS``, one per comma."""
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def embedded_postgres(self) -> bool:
        """True when the system must start its own PostgreSQL."""
        return self.database_url is None

    @property
    def embedded_nats(self) -> bool:
        """True when the system must start its own NATS JetStream."""
        return self.nats_url is None

    def with_urls(self, database_url: str, nats_url: str | None) -> Settings:
        """Return a copy with resolved server URLs (after embedded servers start)."""
        return msgspec.structs.replace(self, database_url=database_url, nats_url=nats_url)

    def eventsourcing_env(self) -> dict[str, str]:
        """Environment for the ``eventsourcing`` library's PostgreSQL persistence."""
        if self.database_url is None:
            raise SettingsError("database URL is not resolved yet")
        parts = urlsplit(self.database_url)
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
            "POSTGRES_SCHEMA": self.db_schema,
            # Every application, projection and relay has its own pool and a process holds
            # several, while PostgreSQL allows 100 connections by default: one kept open each,
            # up to four more under load, closed again when idle (adapters/postgres_store.py).
            "POSTGRES_POOL_SIZE": "1",
            "POSTGRES_MAX_OVERFLOW": "4",
            "POSTGRES_CONNECT_TIMEOUT": "5",
            "POSTGRES_PRE_PING": "y",
            "CREATE_TABLE": "n",
        }

    @property
    def events_source(self) -> str:
        """CloudEvents ``source`` attribute of this deployment's relayed events."""
        return self.event_source or f"urn:hes:{self.db_schema}"

    def stream(self, name: str) -> str:
        """JetStream stream name with this deployment's prefix."""
        return f"{self.nats_prefix}{name}"

    def subject(self, subject: str) -> str:
        """NATS subject with this deployment's prefix."""
        return f"{self.nats_prefix.lower()}.{subject}" if self.nats_prefix else subject


def _dec_hook(type_: type, obj: object) -> object:
    if type_ is Path and isinstance(obj, str):
        return Path(obj)
    # msgspec's dec_hook protocol: NotImplementedError means "no conversion for this type".
    raise NotImplementedError(type_)


def _env_error(message: str) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.port`": name the variable instead.
    match = re.search(r"at `\$\.(\w+)`", message)
    if match:
        return f"HES_{match.group(1).upper()}: {message.split(' - at')[0]}"
    return message
