"""A child process that keeps dying is restarted with backoff and called crash-looping."""

from __future__ import annotations

import time

import pytest

from bootstrap.reading_process import CRASH_LOOP, ChildState, WorkerProcess
from config.settings import Settings

pytestmark = pytest.mark.integration


def test_a_child_exiting_before_it_is_ready_is_crash_looping(settings: Settings) -> None:
    # `hes no-such-command` exits with code 2 at once, never saying it is ready.
    child = WorkerProcess(settings, max_backoff=0.2, command=("no-such-command",), name="broken")
    child.start()
    try:
        assert child.wait_started(60) is not ChildState.RUNNING
        deadline = time.monotonic() + 60
        while child.quick_exits < CRASH_LOOP:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ok, detail = child.health()
        assert not ok and "crash-looping" in detail and "2" in detail, detail
        assert child.last_exit == 2 and child.restarts >= CRASH_LOOP
    finally:
        child.stop()
    assert child.health() == (False, "stopped")
