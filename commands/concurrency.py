"""Optimistic-concurrency helpers shared by the command applications."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Generic, TypeVar
from uuid import UUID

import msgspec
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Recording

from domain.errors import Conflict

T = TypeVar("T")

MAX_ATTEMPTS = 30
"""How often a command reloads and retries after losing a version race."""


def back_off(attempt: int) -> None:
    """Sleep a jittered, growing moment after a lost version race (at most 50 ms)."""
    time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))


def last_position(recordings: list[Recording[UUID]]) -> int | None:
    """Event-store position of the last recorded event, or None when nothing was recorded."""
    return recordings[-1].notification.id if recordings else None


class Save(msgspec.Struct, Generic[T], frozen=True):
    """What one attempt decided to save, and the command's answer once it is saved."""

    aggregates: tuple[Aggregate, ...]
    answer: Callable[[list[Recording[UUID]]], T]


def save_with_retry(
    app: Application[UUID],
    attempt: Callable[[], T | Save[T]],
    too_fast: str,
    pause: bool = True,
) -> T:
    """Run ``attempt`` (load, decide, act) and save what it returns, again after a lost race.

    An attempt returns either the answer itself (nothing to save: a replay, no change) or a
    ``Save``. When the save loses the optimistic-concurrency race (``IntegrityError``), the next
    attempt reloads; ``pause`` backs off (jittered) first. After ``MAX_ATTEMPTS`` lost races:
    ``Conflict(too_fast)``.
    """
    for number in range(MAX_ATTEMPTS):
        step = attempt()
        if not isinstance(step, Save):
            return step
        try:
            recordings = app.save(*step.aggregates)
        except IntegrityError:
            if pause:
                back_off(number)
            continue
        return step.answer(recordings)
    raise Conflict(too_fast)
