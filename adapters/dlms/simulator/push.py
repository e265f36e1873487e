"""Data-notification pushes of simulated meters over the wrapper, on a schedule or on demand."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from adapters.dlms import wrapper
from adapters.dlms.cipher import SC_AUTHENTICATED_ENCRYPTED, cipher_apdu
from adapters.dlms.cosem_time import encode_datetime
from adapters.dlms.simulator.apdu import data_notification
from adapters.dlms.simulator.meter import SimulatedMeter

log = logging.getLogger(__name__)

PUSH_WPORT = 1
CONNECT_TIMEOUT_S = 5.0


def notification(meter: SimulatedMeter, long_invoke_id: int, *, ciphered: bool) -> bytes:
    """The DATA-NOTIFICATION APDU of one push, general-glo ciphered when ``ciphered``."""
    stamp = encode_datetime(datetime.fromtimestamp(meter.meter_now(), UTC))
    apdu = data_notification(long_invoke_id, stamp, meter.objects.push_body())
    if not ciphered:
        return apdu
    return cipher_apdu(
        apdu,
        security_control=SC_AUTHENTICATED_ENCRYPTED,
        system_title=meter.system_title,
        invocation_counter=meter.state.next_server_ic(),
        keys=meter.keys.keys,
        general=True,
    )


class Pusher:
    """Pushes every meter's notification to ``host:port`` every ``interval`` seconds."""

    def __init__(
        self,
        meters: Sequence[SimulatedMeter],
        host: str,
        port: int,
        *,
        interval: float,
        ciphered: bool,
    ) -> None:
        self.meters, self.host, self.port = meters, host, port
        self.interval, self.ciphered = interval, ciphered
        self._invoke_ids = {m.index: itertools.count(1) for m in meters}
        self._tasks: set[asyncio.Task[None]] = set()
        self._failing: set[int] = set()
        self.sent = 0

    def start(self) -> None:
        """Start one sleeping loop per meter, spread over the first interval."""
        n = max(len(self.meters), 1)
        for i, meter in enumerate(self.meters):
            meter.on_push_request(
                functools.partial(self.trigger, meter), f"{self.host}:{self.port}"
            )
            self._spawn(self._loop(meter, self.interval * i / n))

    def trigger(self, meter: SimulatedMeter) -> None:
        """Push one notification of ``meter`` now (push setup method 1)."""
        self._spawn(self.push(meter))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _loop(self, meter: SimulatedMeter, delay: float) -> None:
        await asyncio.sleep(delay)
        while True:
            await self.push(meter)
            await asyncio.sleep(self.interval)

    async def push(self, meter: SimulatedMeter) -> None:
        """Send one notification; a refused or broken connection is logged and skipped."""
        try:
            apdu = notification(meter, next(self._invoke_ids[meter.index]), ciphered=self.ciphered)
            frame = wrapper.encode(PUSH_WPORT, PUSH_WPORT, apdu)
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT_S
            )
            try:
                writer.write(frame)
                await writer.drain()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        except (OSError, TimeoutError) as exc:
            if meter.index not in self._failing:
                log.warning(
                    "meter %s: push to %s:%d failed: %s", meter.serial, self.host, self.port, exc
                )
            self._failing.add(meter.index)
            return
        if meter.index in self._failing:
            log.info("meter %s: push to %s:%d works again", meter.serial, self.host, self.port)
            self._failing.discard(meter.index)
        self.sent += 1

    async def close(self) -> None:
        """Stop all push loops."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
