"""Association views per meter model and client (``dlms_model_views``), cached in memory.

A model is its manufacturer, model and firmware as registered (case-insensitive); the view is
what one client of one meter of that model was shown. It is read on the first session with a
meter of an unknown model, kept for every meter of the model, and read again by a DISCOVER
command. A view that could not be read (the association object denied or missing) is kept as
an error and tried again after a day. Lookups are cached, so planning a read costs no query.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from adapters.dlms.session import MeterTarget
from domain.association_view import AssociationView, CosemObject
from domain.text import printable

CACHE_TTL_S = 300.0
ERROR_RETRY = timedelta(days=1)
ModelKey = tuple[str, str, str, int]


def model_key(target: MeterTarget, client: int) -> ModelKey:
    """The model a meter belongs to, with the client whose view is meant."""
    return (target.manufacturer.casefold(), target.model.casefold(), target.firmware, client)


@dataclass(frozen=True, slots=True)
class StoredView:
    """A model's view, or why it could not be read, and when."""

    view: AssociationView | None
    error: str | None
    discovered_at: datetime

    @property
    def due(self) -> bool:
        """True when a failed discovery should be tried again."""
        return self.view is None and datetime.now(UTC) - self.discovered_at > ERROR_RETRY


_objects = msgspec.json.Decoder(tuple[CosemObject, ...])


class ModelViews:
    """Reads and writes ``dlms_model_views`` through a short-lived in-memory cache."""

    def __init__(self, pool: AsyncConnectionPool[Any], schema: str) -> None:
        self._pool = pool
        self._table = sql.Identifier(schema, "dlms_model_views")
        self._cache: dict[ModelKey, tuple[float, StoredView | None]] = {}
        self._loading: dict[ModelKey, asyncio.Lock] = {}
        self._discovering: set[ModelKey] = set()

    def claim_discovery(self, key: ModelKey) -> bool:
        """True for the one session that reads a model's view now (others read unplanned)."""
        if key in self._discovering:
            return False
        self._discovering.add(key)
        return True

    def release_discovery(self, key: ModelKey) -> None:
        """The session that claimed the discovery is done (stored or failed)."""
        self._discovering.discard(key)

    async def get(self, key: ModelKey) -> StoredView | None:
        """The stored view of a model (None: never discovered); one query per model at once."""
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < CACHE_TTL_S:
            return cached[1]
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._cache.get(key)
            if cached is not None and time.monotonic() - cached[0] < CACHE_TTL_S:
                return cached[1]
            return await self._load(key)

    async def _load(self, key: ModelKey) -> StoredView | None:
        query = sql.SQL(
            "SELECT association_version, objects::text, error, discovered_at FROM {} "
            "WHERE manufacturer = %s AND model = %s AND firmware = %s AND client_address = %s"
        ).format(self._table)
        async with self._pool.connection() as conn:
            row = await (await conn.execute(query, key)).fetchone()
        stored = None
        if row is not None:
            version, objects, error, at = row
            view = (
                None
                if objects is None
                else AssociationView(version=version, objects=_objects.decode(objects))
            )
            stored = StoredView(view, error, at)
        self._cache[key] = (time.monotonic(), stored)
        return stored

    async def put(
        self,
        key: ModelKey,
        target: MeterTarget,
        view: AssociationView | None,
        error: str | None = None,
    ) -> StoredView:
        """Store what one meter of the model showed (or why it could not be read)."""
        why = printable(error or "unknown")[:500]  # quotes what the meter sent
        stored = StoredView(view, None if view is not None else why, _now())
        query = sql.SQL(
            "INSERT INTO {t} (manufacturer, model, firmware, client_address, "
            "association_version, objects, error, discovered_at, meter_id, serial) "
            "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s) "
            "ON CONFLICT (manufacturer, model, firmware, client_address) DO UPDATE SET "
            "association_version = EXCLUDED.association_version, objects = EXCLUDED.objects, "
            "error = EXCLUDED.error, discovered_at = EXCLUDED.discovered_at, "
            "meter_id = EXCLUDED.meter_id, serial = EXCLUDED.serial"
        ).format(t=self._table)
        objects = None if view is None else msgspec.json.encode(view.objects).decode()
        params = (
            *key,
            None if view is None else view.version,
            objects,
            stored.error,
            stored.discovered_at,
            target.id,
            target.serial,
        )
        async with self._pool.connection() as conn:
            await conn.execute(query, params)
        self._cache[key] = (time.monotonic(), stored)
        return stored


def _now() -> datetime:
    return datetime.now(UTC)
