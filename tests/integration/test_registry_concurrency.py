"""Concurrent commands on one meter: optimistic concurrency retries, idempotency holds."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from commands.context import SYSTEM, CommandContext
from commands.meters import MeterRegistry
from config.settings import Settings
from domain.values import ConnectionProfile, MeterSpec
from tests.conftest import new_serial

pytestmark = pytest.mark.integration


def _spec() -> MeterSpec:
    return MeterSpec(
        serial=new_serial("CC"),
        manufacturer="Acme",
        model="C",
        firmware="1",
        phases=1,
        region="R",
        area="A",
        connection=ConnectionProfile(host="127.0.0.1"),
    )


def test_parallel_commands_all_land_and_retries_land_once(settings: Settings) -> None:
    registry = MeterRegistry(env=settings.database.eventsourcing_env())
    try:
        meter = registry.register_meter(_spec(), CommandContext(actor=SYSTEM)).meter
        accounts = [f"ACC-{i}" for i in range(16)]

        def assign(account: str) -> int:
            ctx = CommandContext(actor=SYSTEM, idempotency_key=f"k-{account}")
            return registry.assign_customer(meter.id, account, ctx).meter.version

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(assign, accounts))
            # Every command retried twice more, concurrently: nothing new may be recorded.
            list(pool.map(assign, accounts * 2))

        final = registry.get(meter.id)
        assert final.version == 1 + len(accounts)
        events = list(registry.events.get(meter.id))
        keys = [e.meta.idempotency_key for e in events[1:]]  # type: ignore[attr-defined]
        assert sorted(keys) == sorted(f"k-{a}" for a in accounts)
    finally:
        registry.close()
