"""The one optimistic-concurrency save-and-retry loop of the command applications."""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

import commands.concurrency as concurrency
from commands.concurrency import MAX_ATTEMPTS, Save, save_with_retry
from domain.errors import Conflict


class _Store:
    """Stands in for an application: its first ``losses`` saves lose the version race."""

    def __init__(self, losses: int) -> None:
        self.losses = losses
        self.saved: list[tuple[Any, ...]] = []

    def save(self, *aggregates: Any) -> list[Any]:
        if self.losses:
            self.losses -= 1
            raise IntegrityError("version taken")
        self.saved.append(aggregates)
        return []


def _app(store: _Store) -> Application[UUID]:
    return cast(Application[UUID], store)


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The attempt numbers ``back_off`` was called with (without sleeping)."""
    seen: list[int] = []
    monkeypatch.setattr(concurrency, "back_off", seen.append)
    return seen


def test_an_answer_without_save_returns_at_once(pauses: list[int]) -> None:
    store = _Store(losses=0)
    assert save_with_retry(_app(store), lambda: "replayed", "busy") == "replayed"
    assert store.saved == [] and pauses == []


def test_lost_races_reload_back_off_and_retry_until_saved(pauses: list[int]) -> None:
    store = _Store(losses=2)
    loads: list[int] = []

    def attempt() -> str | Save[str]:
        loads.append(len(loads))
        aggregates = cast(tuple[Aggregate, ...], ("aggregate", len(loads)))
        return Save(aggregates, lambda recordings: f"saved {recordings}")

    assert save_with_retry(_app(store), attempt, "busy") == "saved []"
    assert loads == [0, 1, 2]  # reloaded before every attempt
    assert store.saved == [("aggregate", 3)]
    assert pauses == [0, 1]


def _save_one() -> int | Save[int]:
    return Save((), lambda _: 1)


def test_without_pause_it_retries_at_once(pauses: list[int]) -> None:
    store = _Store(losses=3)
    assert save_with_retry(_app(store), _save_one, "busy", pause=False) == 1
    assert pauses == []


def test_too_many_lost_races_is_a_conflict_with_the_callers_message(pauses: list[int]) -> None:
    store = _Store(losses=MAX_ATTEMPTS)
    with pytest.raises(Conflict, match="meter x is changing too fast"):
        save_with_retry(_app(store), _save_one, "meter x is changing too fast")
    assert len(pauses) == MAX_ATTEMPTS and store.saved == []
