"""Load limitation as a meter's limiter (COSEM class 71) holds it: thresholds and emergency."""

from __future__ import annotations

from datetime import datetime

import msgspec

from domain.errors import Collector

MAX_THRESHOLD_W = 1_000_000.0
MAX_DURATION_S = 86_400 * 31


class EmergencyProfile(msgspec.Struct, frozen=True, kw_only=True):
    """While active (from ``activation`` for ``duration_s``), the emergency threshold applies."""

    profile_id: int
    activation: datetime
    duration_s: int


class LoadLimit(msgspec.Struct, frozen=True, kw_only=True):
    """Import active power thresholds in watts and how long they must be crossed to act."""

    threshold_normal_w: float
    threshold_emergency_w: float
    min_over_threshold_s: int = 60
    min_under_threshold_s: int = 60
    emergency: EmergencyProfile | None = None

    def check(self) -> None:
        """Raise ``ValidationFailed`` naming every rule this load limit breaks."""
        errors = Collector()
        for name, value in (
            ("thresholdNormalW", self.threshold_normal_w),
            ("thresholdEmergencyW", self.threshold_emergency_w),
        ):
            if not 0 < value <= MAX_THRESHOLD_W:
                errors.add(name, "range", f"{name} must be in (0, {MAX_THRESHOLD_W:.0f}] W")
        if self.threshold_emergency_w > self.threshold_normal_w:
            errors.add(
                "thresholdEmergencyW", "order", "the emergency threshold cannot exceed the normal"
            )
        for name, seconds in (
            ("minOverThresholdS", self.min_over_threshold_s),
            ("minUnderThresholdS", self.min_under_threshold_s),
        ):
            if not 0 <= seconds <= MAX_DURATION_S:
                errors.add(name, "range", f"{name} must be 0..{MAX_DURATION_S} s")
        if self.emergency is not None:
            if not 0 <= self.emergency.profile_id <= 65535:
                errors.add("emergency.profileId", "range", "profileId must be 0..65535")
            if not 0 < self.emergency.duration_s <= MAX_DURATION_S:
                errors.add(
                    "emergency.durationS", "range", f"durationS must be 1..{MAX_DURATION_S} s"
                )
            if self.emergency.activation.tzinfo is None:
                errors.add("emergency.activation", "timezone", "activation needs a UTC offset")
        errors.raise_if_any()
