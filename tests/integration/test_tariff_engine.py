"""Tariff engine over real PostgreSQL: regional load windows in, load prices recorded."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from bootstrap.migrate import migrate_database
from commands.context import SYSTEM, CommandContext
from commands.tariffs import TariffBook
from config.settings import Settings
from domain.obis import POWER_IMPORT
from domain.pricing import TariffSpec
from domain.readings import MeterBatch, Reading, Source
from processes.tariff_engine import TariffEngine
from projections.reading_store import ReadingStore

pytestmark = pytest.mark.integration

CAPACITY_W = 10_000.0


@pytest.fixture(scope="module")
def engine_settings(settings: Settings) -> Iterator[Settings]:
    """A schema of its own, so the session's reading workers' engine cannot race these tests."""
    own = settings.replace(db_schema=f"{settings.database.schema}_te")
    migrate_database(own)
    yield own
    assert own.database.url is not None
    with psycopg.connect(own.database.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(own.database.schema)))


@pytest.fixture
def book(engine_settings: Settings) -> Iterator[TariffBook]:
    """The tariff write side of the engine's schema."""
    tariffs = TariffBook(env=engine_settings.database.eventsourcing_env())
    yield tariffs
    tariffs.close()


@pytest.fixture
async def pool(engine_settings: Settings) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A connection pool on the engine's database."""
    assert engine_settings.database.url is not None
    async with AsyncConnectionPool(
        engine_settings.database.url, min_size=1, max_size=2, kwargs={"autocommit": True}
    ) as p:
        yield p


@pytest.fixture
async def engine(
    engine_settings: Settings, pool: AsyncConnectionPool[Any], book: TariffBook
) -> AsyncIterator[TariffEngine]:
    """An engine sharing the test's tariff book."""
    tariff_engine = TariffEngine(engine_settings.database, pool, book)
    yield tariff_engine
    await tariff_engine.close()


def new_region() -> str:
    """A region name no other test uses."""
    return f"TE-{uuid.uuid4().hex[:8]}"


def quarter(offset: int) -> datetime:
    """Start of the 15-minute window ``offset`` windows after the one three hours ago."""
    start = datetime.now(UTC) - timedelta(hours=3)
    start = start.replace(minute=start.minute - start.minute % 15, second=0, microsecond=0)
    return start + timedelta(minutes=15 * offset)


class Loads:
    """Writes one meter's power into a region of known capacity through ``ReadingStore``."""

    def __init__(self, schema: str, pool: AsyncConnectionPool[Any], region: str) -> None:
        self.store = ReadingStore(schema, CAPACITY_W)
        self.pool = pool
        self.region = region
        self.meter = uuid.uuid4()

    async def capacity(self, schema: str) -> None:
        """Give the region the test capacity."""
        async with self.pool.connection() as conn:
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {}.region_capacity (region, capacity_w) VALUES (%s, %s)"
                ).format(sql.Identifier(schema)),
                (self.region, CAPACITY_W),
            )

    async def put(self, window: int, load_pct: float) -> None:
        """Store one power reading making the region's load ``load_pct`` in that window."""
        reading = Reading(POWER_IMPORT.id, quarter(window), CAPACITY_W * load_pct / 100)
        batch = MeterBatch(self.meter, self.region, Source.HTTP, [reading], datetime.now(UTC))
        async with self.pool.connection() as conn:
            result = await self.store.write(conn, [batch])
        assert result.inserted == 1


def create_tariff(book: TariffBook, region: str) -> None:
    """A tariff of 0.20 EUR/kWh with the default load tiers."""
    spec = TariffSpec(region=region, currency="EUR", base_price=Decimal("0.20"), timezone="UTC")
    book.create_tariff(spec, CommandContext(actor=SYSTEM))


async def test_load_steps_the_price_once_per_move(
    engine_settings: Settings,
    pool: AsyncConnectionPool[Any],
    book: TariffBook,
    engine: TariffEngine,
) -> None:
    region = new_region()
    create_tariff(book, region)
    loads = Loads(engine_settings.database.schema, pool, region)
    await loads.capacity(engine_settings.database.schema)

    await loads.put(0, 50.0)
    assert await engine.run_once(datetime.now(UTC)) == []  # below 60 %: still the base price
    tariff = book.get(region)
    assert tariff.load_price == Decimal("0.20")

    await loads.put(1, 87.0)
    assert await engine.run_once(datetime.now(UTC)) == [region]
    tariff = book.get(region)
    assert tariff.load_price == Decimal("0.24")  # +20 %
    assert tariff.load_pct == pytest.approx(87.0)
    version = tariff.version

    assert await engine.run_once(datetime.now(UTC)) == []  # a repeat run records nothing
    assert book.get(region).version == version

    await loads.put(2, 95.0)
    assert await engine.run_once(datetime.now(UTC)) == [region]
    tariff = book.get(region)
    assert tariff.load_price == Decimal("0.27")  # +35 %
    assert tariff.bucket == quarter(2)
    version = tariff.version

    await loads.put(3, 95.0)  # the same load in a new window: no 2 % move
    assert await engine.run_once(datetime.now(UTC)) == []
    assert book.get(region).version == version
    assert book.get(region).load_price == Decimal("0.27")


async def test_regions_without_a_tariff_are_skipped(
    engine_settings: Settings,
    pool: AsyncConnectionPool[Any],
    book: TariffBook,
    engine: TariffEngine,
) -> None:
    priced, unpriced = new_region(), new_region()
    create_tariff(book, priced)
    for region, pct in ((unpriced, 95.0), (priced, 85.0)):
        loads = Loads(engine_settings.database.schema, pool, region)
        await loads.capacity(engine_settings.database.schema)
        await loads.put(0, pct)
    assert await engine.run_once(datetime.now(UTC)) == [priced]
    assert book.get(priced).load_price == Decimal("0.24")
