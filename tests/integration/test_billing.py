"""Billing determinants: energy per tariff price in force, with the price's position."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from bootstrap.workers import SupervisedProjection
from commands.context import SYSTEM, CommandContext, Role
from commands.tariffs import TariffBook
from config.settings import Settings
from domain.meter import meter_id
from domain.readings import MeterBatch, Reading, Source
from projections.intervals import window_start
from projections.reading_store import ReadingStore
from tests.conftest import new_serial
from tests.integration.gql import REGISTER, gql, meter_input
from tests.integration.test_graphql_tariffs import create, history, new_region

pytestmark = pytest.mark.integration

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Any]


async def test_energy_is_split_by_the_price_in_force(
    client: Client, auth: Auth, settings: Settings, tariffs_worker: SupervisedProjection
) -> None:
    region = new_region()
    serial = new_serial("B")
    await gql(client, REGISTER, {"input": meter_input(serial, region=region)}, auth(Role.OPERATOR))
    assert (await create(client, auth, region, basePrice="0.2000"))["__typename"] == "Tariff"
    start = window_start(datetime.now(UTC), timedelta(minutes=15)) + timedelta(minutes=15)
    book = TariffBook(env=settings.database.eventsourcing_env())
    try:
        # 87 % load from the third window on: +20 % → 0.24 per kWh.
        outcome = await asyncio.to_thread(
            book.apply_load,
            region,
            87.0,
            start + timedelta(minutes=30),
            CommandContext(actor=SYSTEM),
        )
        assert outcome.changed
    finally:
        book.close()
    for _ in range(100):
        if len(await history(client, auth, region)) == 2:
            break
        await asyncio.sleep(0.05)
    # The register every 5 minutes, +100 Wh each time, for an hour.
    readings = [
        Reading(quantity=1, ts=start + timedelta(minutes=5 * i), value=1000.0 + 100 * i)
        for i in range(12)
    ]
    assert settings.database.url
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.database.url, open=False, kwargs={"autocommit": True}
    )
    await pool.open()
    try:
        async with pool.connection() as conn:
            await ReadingStore(settings.database.schema, 1e7).write(
                conn,
                [
                    MeterBatch(
                        meter=meter_id(serial),
                        region=region,
                        source=Source.SIMULATOR,
                        readings=readings,
                        received_at=start,
                    )
                ],
            )
    finally:
        await pool.close()

    answer = await client.get(
        f"/api/v1/meters/{serial}/billing-determinants",
        params={"from": start.isoformat(), "to": (start + timedelta(hours=1)).isoformat()},
        headers=auth(Role.VIEWER),
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    groups = [
        (g["energyWh"], g["intervals"], g["pricePerKwh"], g["amount"], g["priceKind"])
        for g in body["determinants"]
    ]
    assert groups == [
        (200.0 + 300.0, 2, "0.2000", "0.1000", "base"),
        (300.0 + 300.0, 2, "0.2400", "0.1440", "load"),
    ]
    positions = [g["pricePosition"] for g in body["determinants"]]
    assert positions[0] < positions[1]
    assert body["missingIntervals"] == 0
    assert Decimal(body["determinants"][1]["amount"]) == Decimal("0.6") * Decimal("0.24")
