"""Find the PostgreSQL, NATS and Redis servers the tests use; start embedded ones when needed.

Order for each: the ``HES_TEST_*_URL`` variable, then the development machine's local server,
then (PostgreSQL and NATS only) an embedded server under the test run's temporary directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from bootstrap.embedded import (
    EmbeddedNats,
    EmbeddedPostgres,
    jetstream_available,
    start_nats,
    start_postgres,
)

LOCAL_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
LOCAL_NATS_URL = "nats://127.0.0.1:4222"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Services:
    """Server URLs for one test session, plus the embedded servers to stop at its end."""

    database_url: str
    nats_url: str
    redis_url: str | None
    sources: dict[str, str] = field(default_factory=dict)
    """How each URL was found: ``env``, ``local`` or ``embedded`` (``none`` for Redis)."""
    _embedded: list[EmbeddedPostgres | EmbeddedNats] = field(default_factory=list, repr=False)

    def close(self) -> None:
        """Stop the embedded servers this session started."""
        while self._embedded:
            self._embedded.pop().stop()


def discover(tmp_root: Path) -> Services:
    """Resolve database, NATS and Redis URLs; embedded servers keep their data under tmp_root."""
    embedded: list[EmbeddedPostgres | EmbeddedNats] = []
    sources: dict[str, str] = {}
    try:
        database_url = _env("HES_TEST_DATABASE_URL")
        if database_url is not None:
            sources["database"] = "env"
        elif postgres_available(LOCAL_DATABASE_URL):
            database_url, sources["database"] = LOCAL_DATABASE_URL, "local"
        else:
            postgres = start_postgres(tmp_root)
            embedded.append(postgres)
            database_url, sources["database"] = postgres.url, "embedded"

        nats_url = _env("HES_TEST_NATS_URL")
        if nats_url is not None:
            sources["nats"] = "env"
        elif jetstream_available(LOCAL_NATS_URL, timeout=2.0):
            nats_url, sources["nats"] = LOCAL_NATS_URL, "local"
        else:
            nats = start_nats(tmp_root)
            embedded.append(nats)
            nats_url, sources["nats"] = nats.url, "embedded"
    except BaseException:
        for server in reversed(embedded):
            server.stop()
        raise

    redis_url = _env("HES_TEST_REDIS_URL")
    if redis_url is not None:
        sources["redis"] = "env"
    elif redis_available(LOCAL_REDIS_URL):
        redis_url, sources["redis"] = LOCAL_REDIS_URL, "local"
    else:
        sources["redis"] = "none"
    return Services(database_url, nats_url, redis_url, sources, embedded)


def postgres_available(url: str, timeout: float = 2.0) -> bool:
    """True when a psycopg connection to ``url`` succeeds within ``timeout`` seconds."""
    try:
        with psycopg.connect(url, connect_timeout=max(2, round(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def redis_available(url: str, timeout: float = 2.0) -> bool:
    """True when Redis at ``url`` answers PING within ``timeout`` seconds."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None
