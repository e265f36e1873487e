"""One simulated meter: identity, keys, persisted state, measurement model and COSEM objects."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adapters.dlms.simulator.behaviour import Behaviour
from adapters.dlms.simulator.cosem_objects import REGISTERS, MeterObjects
from adapters.dlms.simulator.keys import DEFAULT_SEED, serial_of, simulated_keys
from adapters.dlms.simulator.meter_model import MeterModel, traits_for
from adapters.dlms.simulator.obis import text
from adapters.dlms.simulator.state import MeterState

log = logging.getLogger(__name__)


@dataclass
class MeterStats:
    """What the meter's servers did, for tests: block transfers and segmented HDLC replies."""

    blocks_sent: int = 0
    segmented_replies: int = 0
    blocks_received: int = 0
    """SET value and ACTION parameter blocks received (requests in blocks)."""


class SimulatedMeter:
    """A meter as its DLMS server and its tests see it."""

    def __init__(
        self,
        index: int,
        *,
        seed: str = DEFAULT_SEED,
        history_start: float,
        state_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        behaviour: Behaviour | None = None,
    ) -> None:
        self.index = index
        self.behaviour = behaviour or Behaviour()
        self.stats = MeterStats()
        self.serial = serial_of(index)
        self.keys = simulated_keys(self.serial, seed)
        self.system_title = self.keys.system_title
        self.logical_device_name = f"HES{self.serial}".encode("ascii")
        self.state: MeterState = MeterState(
            None if state_dir is None else state_dir / f"{self.serial}.json"
        )
        self.now = clock
        self.model: MeterModel = MeterModel(
            traits_for(seed, index), history_start, self.state.relay_open_intervals, clock
        )
        self.objects = MeterObjects(self)
        self.push_destination: str | None = None
        self._push_hook: Callable[[], None] | None = None

    @property
    def relay_connected(self) -> bool:
        """Whether the disconnector is closed (the customer is supplied)."""
        return self.state.relay_connected

    def set_relay(self, *, connected: bool) -> None:
        """Close or open the disconnector now; logs event 63 or 62 when the state changes."""
        now = self.now()
        if self.state.set_relay(connected, now, now + self.state.clock_offset):
            log.info("meter %s: relay %s", self.serial, "closed" if connected else "opened")

    def meter_now(self) -> float:
        """The meter clock (UTC seconds)."""
        return self.now() + self.state.clock_offset

    def set_meter_time(self, meter_time: float) -> None:
        """Set the meter clock."""
        self.state.set_clock_offset(meter_time - self.now())

    def on_push_request(self, hook: Callable[[], None], destination: str) -> None:
        """Register what the push setup's push method triggers."""
        self._push_hook, self.push_destination = hook, destination

    def request_push(self) -> bool:
        """Trigger a push now; False when no push destination is configured."""
        if self._push_hook is None:
            return False
        self._push_hook()
        return True

    def values(self) -> dict[str, int]:
        """Raw register values now, keyed by OBIS code (for tests and logs)."""
        now = self.now()
        return {text(ln): reg.value(self, now) for ln, reg in REGISTERS.items()}
