"""Event-store pools give surplus connections back: a burst must not hold PostgreSQL's
connection budget for the next ten minutes (psycopg_pool's default)."""

from __future__ import annotations

import threading
import time

import pytest

from adapters.postgres_store import PostgresStore
from commands.meters import MeterRegistry
from config.settings import Settings

pytestmark = pytest.mark.integration


def test_a_burst_grows_the_pool_to_its_cap_and_idle_connections_are_closed_again(
    settings: Settings,
) -> None:
    app = MeterRegistry(env=settings.database.eventsourcing_env() | {"POSTGRES_MAX_IDLE": "0.3"})
    try:
        assert isinstance(app.factory, PostgresStore)
        datastore = app.factory.datastore
        pool = datastore.pool
        held = threading.Barrier(6)
        released = threading.Event()

        def hold() -> None:
            with datastore.get_connection():
                held.wait(timeout=10)
                released.wait(timeout=10)

        threads = [threading.Thread(target=hold) for _ in range(5)]
        for thread in threads:
            thread.start()
        held.wait(timeout=10)
        assert pool.get_stats()["pool_size"] == 5  # 1 kept + 4 under load, never more
        released.set()
        for thread in threads:
            thread.join()
        deadline = time.monotonic() + 15
        while pool.get_stats()["pool_size"] > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pool.get_stats()["pool_size"] == 1
    finally:
        app.close()
