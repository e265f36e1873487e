"""Dangerous commands: confirmation above the bulk threshold, per-actor hourly limit, counted."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from adapters.window_counters import MemoryWindowCounter
from api.dangerous import ConfirmationRequired, DangerousCommands, DangerousRateLimited, phrase
from commands.context import Actor, Role

OPERATOR = Actor(subject="olga", roles=frozenset({Role.OPERATOR}))


def _denied(target: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "hes_access_denied_total", {"interface": "graphql", "target": target, "reason": reason}
    )
    return value or 0.0


async def test_small_bulk_runs_without_confirmation_and_is_not_counted() -> None:
    guard = DangerousCommands(MemoryWindowCounter(), bulk_threshold=10, per_hour=1)
    for _ in range(5):
        await guard.admit(OPERATOR, "disconnectMeters", count=10, confirm=None)


async def test_large_bulk_needs_the_exact_confirmation(caplog: pytest.LogCaptureFixture) -> None:
    guard = DangerousCommands(MemoryWindowCounter(), bulk_threshold=10, per_hour=5)
    before = _denied("disconnectMeters", "confirmation_required")
    for confirm in (None, "yes", "disconnectMeters 12", "disconnectMeters  11 "):
        with pytest.raises(ConfirmationRequired) as refused, caplog.at_level(logging.WARNING):
            await guard.admit(OPERATOR, "disconnectMeters", count=11, confirm=confirm)
        error = refused.value.errors[0]
        assert (error.field, error.rule) == ("confirm", "confirmation")
        assert "'disconnectMeters 11'" in error.message
    assert _denied("disconnectMeters", "confirmation_required") == before + 4
    record = next(r for r in caplog.records if r.name == "hes.access")
    assert record.__dict__["subject"] == "olga" and record.__dict__["reason"] == (
        "confirmation_required"
    )
    await guard.admit(OPERATOR, "disconnectMeters", count=11, confirm=" disconnectMeters 11 ")
    assert phrase("setMeterKeys", 1) == "setMeterKeys 1"


async def test_key_changes_always_need_confirmation_and_share_the_hourly_limit() -> None:
    counter = MemoryWindowCounter()
    guard = DangerousCommands(counter, bulk_threshold=10, per_hour=2)
    with pytest.raises(ConfirmationRequired):
        await guard.admit(OPERATOR, "setMeterKeys", confirm=None, always=True)
    await guard.admit(OPERATOR, "setMeterKeys", confirm="setMeterKeys 1", always=True)
    await guard.admit(OPERATOR, "disconnectMeters", count=50, confirm="disconnectMeters 50")
    before = _denied("setMeterKeys", "rate_limited")
    with pytest.raises(DangerousRateLimited, match="already ran 2 dangerous commands"):
        await guard.admit(OPERATOR, "setMeterKeys", confirm="setMeterKeys 1", always=True)
    assert _denied("setMeterKeys", "rate_limited") == before + 1
    # Another actor has its own budget; a second guard over the same store shares the counts.
    other = Actor(subject="oscar", roles=frozenset({Role.OPERATOR}))
    await guard.admit(other, "setMeterKeys", confirm="setMeterKeys 1", always=True)
    replica = DangerousCommands(counter, bulk_threshold=10, per_hour=2)
    with pytest.raises(DangerousRateLimited):
        await replica.admit(OPERATOR, "disconnectMeters", count=11, confirm="disconnectMeters 11")
