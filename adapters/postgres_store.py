"""The event store's PostgreSQL infrastructure: eventsourcing's, with idle connections handed back.

psycopg_pool closes one surplus connection per ``max_idle`` seconds (10 minutes by default), so
a pool that once grew under load would hold its peak for hours; across the applications,
projections and relays of several processes that exhausts PostgreSQL's 100 connections.
"""

from __future__ import annotations

from eventsourcing.postgres import PostgresFactory
from eventsourcing.utils import Environment

MAX_IDLE_SECONDS = "POSTGRES_MAX_IDLE"
"""Environment key: seconds between closing surplus idle connections (default 30)."""


class PostgresStore(PostgresFactory):
    """``eventsourcing.postgres`` whose pools shrink back to their size within seconds."""

    def __init__(self, env: Environment) -> None:
        super().__init__(env)
        self.datastore.pool.max_idle = float(env.get(MAX_IDLE_SECONDS) or 30)
