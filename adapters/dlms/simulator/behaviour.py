"""How a simulated meter departs from the IDIS-like default, to behave like meters the
project did not write: no invocation-counter object or one per client, a unit outside the
Blue Book, objects missing or denied to a client, a SET or ACTION answered with a failure, a
DSMR or vendor event-code table, a small PDU and HDLC information field that force block
transfer and segmentation, repeated HDLC flags, a push layout that starts with the push setup.

Behaviours are named presets (``PRESETS``) that combine: ``behaviour("no-counter,odd-unit")``;
numeric settings take a value: ``behaviour("image-block-size=512,drop-at-block=40")``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

INVOCATION_COUNTER_PER_CLIENT = "0.0.43.1.{client}.255"
MANAGEMENT_CLIENT = 1


@dataclass(frozen=True, slots=True)
class Behaviour:
    """Everything a simulated meter may do differently (defaults: the IDIS-like meter)."""

    counter_object: str = "standard"
    """``standard`` (0.0.43.1.0.255), ``none``, or ``per-client`` (0.0.43.1.1.255 for the
    management client 1)."""
    units: Mapping[str, int] = field(default_factory=dict)
    """OBIS → unit code the register reports in its scaler_unit instead of its own."""
    hidden: frozenset[str] = frozenset()
    """Objects the meter does not have (GET: object-undefined; absent from the view)."""
    denied: frozenset[str] = frozenset()
    """Objects whose attributes only the management client (HLS) may read."""
    set_result: int = 0
    """Data-Access-Result answered to every SET that the role may do (1: hardware-fault);
    the value is then not written."""
    action_result: int = 0
    """Action-Result answered to disconnect-control methods (the relay does not move)."""
    set_answered_as_get: bool = False
    """A SET is answered with a GET-response APDU (a malformed reply; nothing is written)."""
    event_codes: Mapping[int, int] = field(default_factory=dict)
    """IDIS code → the code this meter logs for the same event."""
    extra_events: tuple[tuple[float, int], ...] = ()
    """(hours before the meter started, code) entries added to the standard event log."""
    max_pdu: int = 1024
    """Largest APDU the server sends (small: block transfer)."""
    hdlc_max_info: int | None = None
    """Largest HDLC information field the server sends (small: segmented replies)."""
    hdlc_repeated_flags: bool = False
    """Every HDLC frame goes out after an extra opening flag (``7E 7E …``)."""
    push_setup_first: bool = False
    """Pushes start with the push setup's logical name (IDIS style)."""
    push_values: tuple[str, ...] = (
        "1.0.1.8.0.255",
        "1.0.2.8.0.255",
        "1.0.32.7.0.255",
        "1.0.31.7.0.255",
    )
    """Registers pushed after the logical device name and the clock."""

    image_block_size: int = 200
    """The image transfer object's block size (octets per image block)."""
    drop_at_block: int | None = None
    """The meter drops the connection when image block ``n`` (0-based) arrives, once in its
    life: the block is not stored, the blocks before it are."""
    image_verify_s: float = 0.0
    """Seconds an image verification takes (the status shows verification initiated)."""

    def counter_obis(self, client: int = MANAGEMENT_CLIENT) -> str | None:
        """Where the meter keeps the counter it expects from ``client`` (None: nowhere)."""
        if self.counter_object == "none":
            return None
        if self.counter_object == "per-client":
            return INVOCATION_COUNTER_PER_CLIENT.format(client=client)
        return "0.0.43.1.0.255"

    def code(self, idis_code: int) -> int:
        """The code this meter logs for an event IDIS numbers ``idis_code``."""
        return self.event_codes.get(idis_code, idis_code)

    def merged(self, other: Behaviour) -> Behaviour:
        """This behaviour with every field ``other`` changes from the default."""
        default = Behaviour()
        changes = {}
        for f in fields(Behaviour):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if theirs == getattr(default, f.name):
                continue
            if isinstance(mine, frozenset):
                theirs = mine | theirs
            elif isinstance(mine, Mapping):
                theirs = {**mine, **theirs}
            changes[f.name] = theirs
        return replace(self, **changes)


PRESETS: dict[str, Behaviour] = {
    "idis": Behaviour(),
    "no-counter": Behaviour(counter_object="none"),
    "per-client-counter": Behaviour(counter_object="per-client"),
    "odd-unit": Behaviour(units={"1.0.13.7.0.255": 0}),
    "wrong-unit": Behaviour(units={"1.0.14.7.0.255": 33}),
    "denied-register": Behaviour(denied=frozenset({"1.0.14.7.0.255"})),
    "missing-log": Behaviour(hidden=frozenset({"0.0.99.98.2.255"})),
    "set-hardware-fault": Behaviour(set_result=1),
    "action-hardware-fault": Behaviour(action_result=1),
    "set-malformed-reply": Behaviour(set_answered_as_get=True),
    # DSMR: strong DC field is 42/43, and 47 means a configuration change (IDIS: tamper).
    "dsmr-events": Behaviour(event_codes={47: 42, 48: 43}, extra_events=((1.0, 47),)),
    # A vendor table: the disconnector at 30..35, and 62 means overcurrent L1 there.
    "vendor-events": Behaviour(
        event_codes={62: 33, 63: 34, 40: 50, 41: 51, 44: 54, 45: 55, 47: 52, 48: 53},
        extra_events=((1.0, 62),),
    ),
    "small-pdu": Behaviour(max_pdu=96, hdlc_max_info=32),
    "hdlc-flags": Behaviour(hdlc_repeated_flags=True),
    "push-setup-first": Behaviour(
        push_setup_first=True, push_values=("1.0.1.8.0.255", "1.0.2.8.0.255")
    ),
}


SETTINGS: dict[str, tuple[str, type[int] | type[float]]] = {
    "image-block-size": ("image_block_size", int),
    "drop-at-block": ("drop_at_block", int),
    "image-verify-s": ("image_verify_s", float),
}
"""Numeric behaviour settings by name, given as ``name=value``."""


class BehaviourError(ValueError):
    """An unknown preset name or a malformed setting."""


def _setting(item: str) -> Behaviour:
    name, _, text = item.partition("=")
    known = SETTINGS.get(name.strip())
    if known is None:
        raise BehaviourError(
            f"unknown meter setting {name!r}; known: {', '.join(sorted(SETTINGS))}"
        )
    field_name, kind = known
    try:
        value = kind(text.strip())
    except ValueError:
        raise BehaviourError(f"meter setting {name}: {text!r} is not a number") from None
    if value < 0 or (field_name == "image_block_size" and not 16 <= value <= 4096):
        raise BehaviourError(f"meter setting {name}: {text} is out of range")
    changes: dict[str, Any] = {field_name: value}
    return replace(Behaviour(), **changes)


def behaviour(names: str) -> Behaviour:
    """The presets and settings named in ``names`` (comma-separated) combined, left to right."""
    out = Behaviour()
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if "=" in name:
            out = out.merged(_setting(name))
            continue
        preset = PRESETS.get(name)
        if preset is None:
            raise BehaviourError(
                f"unknown meter behaviour {name!r}; known: {', '.join(sorted(PRESETS))}"
            )
        out = out.merged(preset)
    return out
