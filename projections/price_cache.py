"""Current tariff per region, cached (Redis when configured); the read model stays the truth.

Readers fill the cache on a miss. Every relayed tariff event refreshes its region's entry once
the tariffs projection has applied it, so a price change reaches the cache within the relay's
latency. Entries expire after ``ttl`` seconds: that bounds how long a reader that raced a change
(read the old row, wrote it after the refresh) can keep an old price there.
"""

from __future__ import annotations

import logging
from uuid import UUID

import msgspec
from litestar.stores.base import Store

from domain.tariff import tariff_id
from projections.tariffs_queries import TariffQueries, TariffRow

log = logging.getLogger(__name__)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(TariffRow)


class PriceCache:
    """Tariff rows by region in a key-value store, read through to the tariffs read model."""

    def __init__(self, store: Store, queries: TariffQueries, ttl_seconds: int = 30) -> None:
        self.store = store
        self.queries = queries
        self.ttl = ttl_seconds
        self.hits = 0
        self.misses = 0

    async def current(self, region: str) -> TariffRow | None:
        """The region's tariff: from the cache, else from the read model (then cached)."""
        key = tariff_id(region).hex
        raw = await self.store.get(key)
        if raw is not None:
            try:
                cached = _decoder.decode(raw)
            except msgspec.DecodeError:
                log.warning("price cache entry %s is unreadable; reading the model", key)
            else:
                self.hits += 1
                return cached
        self.misses += 1
        row = await self.queries.by_region(region)
        if row is not None:
            await self.store.set(key, _encoder.encode(row), expires_in=self.ttl)
        return row

    async def put(self, row: TariffRow) -> None:
        """Store a row a command of this process just produced (newer than any cached one)."""
        await self.store.set(tariff_id(row.region).hex, _encoder.encode(row), expires_in=self.ttl)

    async def refresh(self, tariff: UUID, version: int, wait_seconds: float = 5.0) -> bool:
        """Store the tariff's row once the projection reached ``version``; False on timeout."""
        row = await self.queries.wait_for_version(tariff, version, wait_seconds)
        if row is None:
            await self.store.delete(tariff.hex)  # never leave an entry known to be old
            return False
        await self.store.set(tariff.hex, _encoder.encode(row), expires_in=self.ttl)
        return True
