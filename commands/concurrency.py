"""Optimistic-concurrency helpers shared by the command applications."""

from __future__ import annotations

import random
import time
from uuid import UUID

from eventsourcing.persistence import Recording

MAX_ATTEMPTS = 30
"""How often a command reloads and retries after losing a version race."""


def back_off(attempt: int) -> None:
    """Sleep a jittered, growing moment after a lost version race (at most 50 ms)."""
    time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))


def last_position(recordings: list[Recording[UUID]]) -> int | None:
    """Event-store position of the last recorded event, or None when nothing was recorded."""
    return recordings[-1].notification.id if recordings else None
