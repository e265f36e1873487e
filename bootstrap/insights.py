"""The insights process under supervision: its own thread, event loop and pool, restarted with
backoff after a failed run; it runs the analysis every ``HES_INSIGHTS_INTERVAL_SECONDS``."""

from __future__ import annotations

import asyncio
import functools
import logging

from bootstrap.applications import alert_desk
from bootstrap.connections import notifier_pool
from bootstrap.supervision import FailureStreak, SupervisedLoop, status_reporter
from config.settings import Settings
from processes.insights.runner import InsightsProcess

log = logging.getLogger(__name__)

INSIGHTS = "insights"
"""The part's name in ``projection_status`` and the logs."""


class SupervisedInsights(SupervisedLoop):
    """Runs the consumption analysis on schedule; a failed run restarts with backoff."""

    def __init__(self, settings: Settings, max_backoff: float = 300.0) -> None:
        if settings.database.url is None:
            raise ValueError("the insights process needs a resolved database URL")
        self._settings = settings
        super().__init__(
            FailureStreak(INSIGHTS, status_reporter(settings, INSIGHTS), max_backoff=max_backoff),
            "insights",
        )

    @property
    def enabled(self) -> bool:
        """False when the analysis runs only on demand (interval 0)."""
        return self._settings.insights.interval_seconds > 0

    async def run(self, stop: asyncio.Event) -> None:
        """Run the analysis every interval until ``stop`` is set."""
        s = self._settings
        pool = notifier_pool(s.database)
        await pool.open(wait=True, timeout=10)
        process = InsightsProcess(
            s.database, s.insights, pool, functools.partial(alert_desk, s.database)
        )
        try:
            log.info("insights running every %.0f s", s.insights.interval_seconds)
            await process.run_forever(stop, lambda _: self.streak.recovered())
        finally:
            await process.close()
            await pool.close()
