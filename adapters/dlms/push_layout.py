"""The values a meter's push setup sends after its logical device name and clock.

A DLMS push setup (class 40) names its capture objects; the head-end must know, for the whole
fleet, which registers follow the device name and clock in every DATA-NOTIFICATION body and
with which scaler and unit. Written ``OBIS:scaler:unit`` per value, comma-separated, e.g.
``1.0.1.8.0.255:0:30,1.0.32.7.0.255:-1:35`` (unit codes as in the Blue Book: 30 Wh, 35 V, …).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.dlms.cosem import ScalerUnit, Scaling, ScalingError

DEFAULT_PUSH_LAYOUT_TEXT = (
    "1.0.1.8.0.255:0:30,1.0.2.8.0.255:0:30,1.0.32.7.0.255:-1:35,1.0.31.7.0.255:-2:33"
)
"""Active energy import and export (Wh), L1 voltage (0.1 V) and L1 current (0.01 A): what the
simulated meters push."""


class PushLayoutError(ValueError):
    """A push layout that cannot be used: names the value and the rule."""


@dataclass(frozen=True)
class PushLayout:
    """The registers of a push body, in order, with their scaler and unit."""

    values: tuple[tuple[str, ScalerUnit], ...]
    scalings: tuple[Scaling, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.values:
            raise PushLayoutError("a push layout needs at least one value")
        scalings = []
        for position, (obis, scaler_unit) in enumerate(self.values, start=1):
            try:
                scalings.append(Scaling.of(obis, scaler_unit))
            except ScalingError as exc:
                raise PushLayoutError(f"push value {position}: {exc}") from None
        object.__setattr__(self, "scalings", tuple(scalings))

    @classmethod
    def parse(cls, text: str) -> PushLayout:
        """A layout from ``OBIS:scaler:unit,...``; ``PushLayoutError`` names what is wrong."""
        values = []
        for position, item in enumerate(text.split(","), start=1):
            parts = item.strip().split(":")
            if len(parts) != 3:
                raise PushLayoutError(
                    f"push value {position} {item.strip()!r}: not OBIS:scaler:unit"
                )
            obis, scaler, unit = parts
            try:
                scaler_unit = ScalerUnit(int(scaler), int(unit))
            except ValueError:
                raise PushLayoutError(
                    f"push value {position} {item.strip()!r}: scaler and unit must be integers"
                ) from None
            if not -12 <= scaler_unit.scaler <= 12:
                raise PushLayoutError(f"push value {position}: scaler outside -12..12")
            values.append((obis.strip(), scaler_unit))
        return cls(tuple(values))

    def __len__(self) -> int:
        return len(self.values)


DEFAULT_PUSH_LAYOUT = PushLayout.parse(DEFAULT_PUSH_LAYOUT_TEXT)
