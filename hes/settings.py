"""Typed settings, read from ``HES_*`` environment variables in this one place."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

import msgspec

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}\Z")


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
    projection_wait_seconds: float = 5.0
    """How long a mutation waits for its read model by default (read-your-writes)."""
    ready_max_lag: int = 100
    """Projection lag (events) above which ``/health/ready`` answers 503."""
    import_batch_size: int = 500
    rate_limit_per_minute: int = 1200
    """Requests per minute per client address (Redis-backed when HES_REDIS_URL is set)."""
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
        if self.rate_limit_per_minute < 1:
            raise SettingsError("HES_RATE_LIMIT_PER_MINUTE: must be at least 1")
        if not 0 < self.port < 65536:
            raise SettingsError(f"HES_PORT={self.port}: must be between 1 and 65535")
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
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "POSTGRES_SCHEMA": self.db_schema,
            "POSTGRES_POOL_SIZE": "5",
            "POSTGRES_MAX_OVERFLOW": "10",
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
