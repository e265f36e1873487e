"""A fleet of simulated DLMS meters, meter ``i`` listening on ``base_port + i``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from adapters.dlms.simulator.behaviour import Behaviour
from adapters.dlms.simulator.keys import DEFAULT_SEED
from adapters.dlms.simulator.limits import Limits
from adapters.dlms.simulator.meter import SimulatedMeter
from adapters.dlms.simulator.push import Pusher
from adapters.dlms.simulator.server import MeterServer
from adapters.dlms.simulator.state import load_history_start

log = logging.getLogger(__name__)

HISTORY_DAYS = 10


class SimulatedFleet:
    """Running simulated meters; close it to stop their servers and pushes."""

    def __init__(
        self, meters: list[SimulatedMeter], servers: list[MeterServer], pusher: Pusher | None
    ) -> None:
        self._meters, self._servers, self.pusher = meters, servers, pusher

    @property
    def serials(self) -> list[str]:
        """Serial numbers, meter 0 first."""
        return [m.serial for m in self._meters]

    @property
    def ports(self) -> list[int]:
        """TCP ports, meter 0 first."""
        return [s.port for s in self._servers]

    def meter(self, index: int) -> SimulatedMeter:
        """Simulated meter ``index`` (its model, state and relay)."""
        return self._meters[index]

    def __len__(self) -> int:
        return len(self._meters)

    async def close(self) -> None:
        """Stop pushes, listeners and open connections."""
        if self.pusher is not None:
            await self.pusher.close()
        for server in self._servers:
            await server.close()

    async def __aenter__(self) -> SimulatedFleet:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start_simulated_meters(
    count: int,
    base_port: int,
    *,
    seed: str = DEFAULT_SEED,
    host: str = "127.0.0.1",
    state_dir: Path | None = None,
    push_to: tuple[str, int] | None = None,
    push_interval: float = 900.0,
    push_ciphered: bool = False,
    limits: Limits | None = None,
    behaviour: Behaviour | Callable[[int], Behaviour] | None = None,
) -> SimulatedFleet:
    """Start ``count`` simulated meters; meter ``i`` listens on ``host:(base_port + i)``.

    ``behaviour`` makes them behave like other meters (one for all, or one per index).
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if not 1 <= base_port <= 65535 - count + 1:
        raise ValueError(f"ports {base_port}..{base_port + count - 1} are not all valid TCP ports")
    if push_interval <= 0:
        raise ValueError(f"push_interval must be positive, got {push_interval}")
    history_start = load_history_start(state_dir, time.time(), HISTORY_DAYS)
    limits = limits or Limits()
    meters = [
        SimulatedMeter(
            i,
            seed=seed,
            history_start=history_start,
            state_dir=state_dir,
            behaviour=behaviour(i) if callable(behaviour) else behaviour,
        )
        for i in range(count)
    ]
    servers: list[MeterServer] = []
    try:
        for meter in meters:
            server = MeterServer(meter, host, base_port + meter.index, limits)
            try:
                await server.start()
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise OSError(
                    exc.errno,
                    f"meter {meter.serial}: cannot listen on {host}:{server.port}: {reason}",
                ) from exc
            servers.append(server)
    except BaseException:
        for server in servers:
            await server.close()
        raise
    pusher = None
    if push_to is not None:
        pusher = Pusher(
            meters, push_to[0], push_to[1], interval=push_interval, ciphered=push_ciphered
        )
        pusher.start()
    log.info(
        "%d simulated DLMS meters on %s:%d-%d (seed %r, state %s)",
        count,
        host,
        base_port,
        base_port + count - 1,
        seed,
        state_dir or "in memory",
    )
    return SimulatedFleet(meters, servers, pusher)
