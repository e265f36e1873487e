"""Simulated DLMS/COSEM meters (HDLC and wrapper over TCP) for tests, demos and load runs.

The public surface for the rest of the project is ``start_simulated_meters`` and
``simulated_keys``; everything else in this package is the simulator's own business.
"""

from adapters.dlms.simulator.behaviour import PRESETS, Behaviour, BehaviourError, behaviour
from adapters.dlms.simulator.fleet import SimulatedFleet, start_simulated_meters
from adapters.dlms.simulator.keys import MeterKeys, simulated_keys
from adapters.dlms.simulator.limits import Limits
from adapters.dlms.simulator.meter import SimulatedMeter

__all__ = [
    "PRESETS",
    "Behaviour",
    "BehaviourError",
    "Limits",
    "MeterKeys",
    "SimulatedFleet",
    "SimulatedMeter",
    "behaviour",
    "simulated_keys",
    "start_simulated_meters",
]
