"""The meter's invocation counter: checked on every APDU, saved every few and at session end."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from adapters.dlms.counters import SERVER_SAVE_EVERY, PostgresCounterLedger
from adapters.dlms.session import CounterRejected
from bootstrap.connections import dlms_pool
from config.settings import Settings
from tests.integration.dlms_support import scalar

pytestmark = pytest.mark.integration


async def saved(settings: Settings, meter: uuid.UUID) -> Any:
    return await scalar(
        settings,
        "SELECT server_last FROM {s}.dlms_invocation_counters WHERE meter_id = %s",
        meter,
    )


async def test_the_meters_counter_is_saved_every_few_apdus_and_at_the_end(
    settings: Settings,
) -> None:
    meter = uuid.uuid4()
    async with dlms_pool(settings.database) as pool:
        ledger = PostgresCounterLedger(pool, settings.database.schema, meter, 0, "CNT-1")
        for ic in range(1, SERVER_SAVE_EVERY):
            await ledger.accept_server(ic)
        assert await saved(settings, meter) is None  # not yet: checked in memory only
        with pytest.raises(CounterRejected):
            await ledger.accept_server(SERVER_SAVE_EVERY - 1)  # a replay within the session
        await ledger.accept_server(SERVER_SAVE_EVERY)
        assert await saved(settings, meter) == SERVER_SAVE_EVERY
        await ledger.accept_server(SERVER_SAVE_EVERY + 5)
        await ledger.flush()
        assert await saved(settings, meter) == SERVER_SAVE_EVERY + 5

        next_session = PostgresCounterLedger(pool, settings.database.schema, meter, 0, "CNT-1")
        with pytest.raises(CounterRejected):
            await next_session.accept_server(SERVER_SAVE_EVERY + 5)
        await next_session.accept_server(SERVER_SAVE_EVERY + 6)
