"""Partition leases on real PostgreSQL: fair shares, takeover of dead and stalled workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from config.settings import Settings
from projections.migrations import MIGRATIONS, PARTITION_LEASES
from projections.partition_leases import LeaseLost, PartitionLeases

pytestmark = pytest.mark.integration

PARTITIONS = 8


class Tracked:
    """A worker's leases and the partitions it was told to consume."""

    def __init__(self, settings: Settings, name: str, lease_seconds: float = 15.0) -> None:
        assert settings.database.url is not None
        self.leases = PartitionLeases(
            settings.database.url, settings.database.schema, PARTITIONS, lease_seconds, worker=name
        )
        self.consuming: set[int] = set()

    async def gain(self, partition: int) -> None:
        assert partition not in self.consuming
        self.consuming.add(partition)

    async def loss(self, partition: int) -> None:
        self.consuming.discard(partition)

    async def tick(self) -> None:
        await self.leases.tick(self.gain, self.loss)
        assert self.consuming == set(self.leases.held)


@pytest.fixture
async def schema(settings: Settings) -> AsyncIterator[Settings]:
    """A fresh schema holding only the lease tables."""
    assert settings.database.url is not None
    own = settings.replace(db_schema=f"{settings.database.schema}_lease")
    ddl = next(m for v, _, m in MIGRATIONS if v == PARTITION_LEASES)
    assert isinstance(ddl, str)
    with psycopg.connect(settings.database.url, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {own.database.schema} CASCADE")
        c.execute(f"CREATE SCHEMA {own.database.schema}")
        c.execute(ddl.replace("{schema}", own.database.schema))  # type: ignore[arg-type]
    yield own
    with psycopg.connect(settings.database.url, autocommit=True) as c:
        c.execute(f"DROP SCHEMA {own.database.schema} CASCADE")


async def test_workers_share_the_partitions_and_take_over_a_clean_leave(schema: Settings) -> None:
    a, b, c = (Tracked(schema, f"t-{n}") for n in "abc")
    await a.tick()
    assert a.consuming == set(range(PARTITIONS))
    await b.tick()  # b sees two workers, but every lease is held: it waits for a's next tick
    await a.tick()  # a gives back what is above its share
    await b.tick()
    assert len(a.consuming) == len(b.consuming) == 4
    assert a.consuming.isdisjoint(b.consuming)
    await c.tick()
    await a.tick()
    await b.tick()
    await c.tick()
    shares = sorted(len(t.consuming) for t in (a, b, c))
    assert shares == [2, 3, 3]
    assert a.consuming | b.consuming | c.consuming == set(range(PARTITIONS))

    await c.leases.release_all()  # a clean shutdown gives its leases back
    await c.leases._disconnect()
    for _ in range(2):
        await a.tick()
        await b.tick()
    assert a.consuming | b.consuming == set(range(PARTITIONS))
    assert len(a.consuming) == len(b.consuming) == 4


async def test_a_dead_workers_partitions_are_taken_at_once(schema: Settings) -> None:
    a, b = Tracked(schema, "t-a", lease_seconds=600), Tracked(schema, "t-b", lease_seconds=600)
    await a.tick()
    await b.tick()
    held = set(a.leases.held)
    # a dies: its session ends without giving anything back, and its 600 s lease is still valid.
    await a.leases._disconnect()
    await asyncio.sleep(0.2)
    await b.tick()
    assert b.consuming == set(range(PARTITIONS))
    assert held <= set(b.leases.held)


async def test_a_stalled_worker_is_fenced_out_after_its_lease(schema: Settings) -> None:
    assert schema.database.url is not None
    a, b = Tracked(schema, "t-a", lease_seconds=2), Tracked(schema, "t-b", lease_seconds=2)
    await a.tick()
    async with await psycopg.AsyncConnection.connect(schema.database.url) as conn:
        async with conn.transaction():
            await conn.execute(a.leases.fence([0, 1]))  # holds: a write may go on

        await asyncio.sleep(2.5)  # a stalls (its session stays open) past its lease
        await b.tick()
        assert b.consuming == set(range(PARTITIONS))
        with pytest.raises(psycopg.errors.RaiseException) as stopped:
            async with conn.transaction():
                await conn.execute(a.leases.fence([0]))
        assert a.leases.lost(stopped.value)
    await a.tick()  # waking up, a learns that it lost everything
    with pytest.raises(LeaseLost):
        a.leases.fence([0])
    assert a.consuming == set()


async def test_a_takeover_waits_for_the_write_in_flight(schema: Settings) -> None:
    assert schema.database.url is not None
    a, b = Tracked(schema, "t-a", lease_seconds=2), Tracked(schema, "t-b", lease_seconds=2)
    await a.tick()
    async with await psycopg.AsyncConnection.connect(schema.database.url) as conn:
        await conn.execute("SELECT 1")
        await conn.execute(a.leases.fence([3]))  # a write of partition 3 is in flight...
        await asyncio.sleep(2.5)  # ... while a's lease runs out
        await b.tick()
        assert 3 not in b.consuming, "partition 3 must wait for the write to end"
        assert b.consuming == set(range(PARTITIONS)) - {3}
        await conn.commit()
    await b.tick()
    assert b.consuming == set(range(PARTITIONS))
