"""The values a meter's push setup sends after its logical device name and clock.

A DLMS push setup (class 40) names its capture objects; the head-end must know, per meter
model, which registers follow the device name and clock in a DATA-NOTIFICATION body and with
which scaler and unit (the model profile's push layouts; the fleet's, ``HES_DLMS_PUSH_LAYOUT``,
for models that name none). Written ``OBIS:scaler:unit`` per value, comma-separated, e.g.
``1.0.1.8.0.255:0:30,1.0.32.7.0.255:-1:35`` (unit codes as in the Blue Book: 30 Wh, 35 V, …).
A layout with a ``setup`` expects the body to start with that push setup's logical name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from adapters.dlms.cosem import ScalerUnit, Scaling, ScalingError
from domain.association_view import OBIS_TEXT
from domain.dlms_profile import DEFAULT_PUSH_LAYOUT_TEXT as DEFAULT_PUSH_LAYOUT_TEXT
from domain.dlms_profile import PushLayoutSpec, parse_push_value


class PushLayoutError(ValueError):
    """A push layout that cannot be used: names the value and the rule."""


@dataclass(frozen=True)
class PushLayout:
    """The registers of a push body, in order, with their scaler and unit."""

    values: tuple[tuple[str, ScalerUnit], ...]
    setup: bytes | None = None
    """Logical name of the push setup that starts the body (None: the body starts with the
    logical device name)."""
    name: str = "fleet"
    scalings: tuple[Scaling, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.values:
            raise PushLayoutError("a push layout needs at least one value")
        if self.setup is not None and len(self.setup) != 6:
            raise PushLayoutError("a push setup's logical name has 6 bytes")
        scalings = []
        for position, (obis, scaler_unit) in enumerate(self.values, start=1):
            try:
                scaling = Scaling.of(obis, scaler_unit)
            except ScalingError as exc:
                raise PushLayoutError(f"push value {position}: {exc}") from None
            if scaling.quality:
                raise PushLayoutError(
                    f"push value {position}: unit code {scaler_unit.unit} is not a Blue Book unit"
                )
            scalings.append(scaling)
        object.__setattr__(self, "scalings", tuple(scalings))

    @classmethod
    def parse(cls, text: str) -> PushLayout:
        """A layout from ``OBIS:scaler:unit,...``; ``PushLayoutError`` names what is wrong."""
        return cls(_values(text.split(",")))

    @classmethod
    def of(cls, spec: PushLayoutSpec) -> PushLayout:
        """The layout a model profile describes."""
        setup = None
        if spec.setup is not None:
            if not OBIS_TEXT.match(spec.setup):
                raise PushLayoutError(f"push layout {spec.name}: setup is not an OBIS code")
            setup = bytes(int(p) for p in spec.setup.split("."))
        return cls(_values(spec.values), setup=setup, name=spec.name)

    def __len__(self) -> int:
        return len(self.values)


def _values(items: Sequence[str]) -> tuple[tuple[str, ScalerUnit], ...]:
    values = []
    for position, item in enumerate(items, start=1):
        try:
            obis, scaler, unit = parse_push_value(item)
        except ValueError as exc:
            raise PushLayoutError(f"push value {position} {exc}") from None
        values.append((obis, ScalerUnit(scaler, unit)))
    return tuple(values)


DEFAULT_PUSH_LAYOUT = PushLayout.parse(DEFAULT_PUSH_LAYOUT_TEXT)
