"""REST bodies of fleet operations shared by the per-meter and the campaign routes."""

from __future__ import annotations

from datetime import datetime

import msgspec

from domain.load_limit import EmergencyProfile, LoadLimit


class EmergencyBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The emergency profile: its id, when it starts and for how long."""

    profile_id: int
    activation: datetime
    duration_s: int


class LoadLimitBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The limiter's thresholds in W and durations in s (COSEM class 71)."""

    threshold_normal_w: float
    threshold_emergency_w: float
    min_over_threshold_s: int = 60
    min_under_threshold_s: int = 60
    emergency: EmergencyBody | None = None

    def value(self) -> LoadLimit:
        """The domain value (its rules are checked by the command)."""
        e = self.emergency
        return LoadLimit(
            threshold_normal_w=self.threshold_normal_w,
            threshold_emergency_w=self.threshold_emergency_w,
            min_over_threshold_s=self.min_over_threshold_s,
            min_under_threshold_s=self.min_under_threshold_s,
            emergency=None
            if e is None
            else EmergencyProfile(
                profile_id=e.profile_id, activation=e.activation, duration_s=e.duration_s
            ),
        )
