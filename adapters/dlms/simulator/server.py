"""One asyncio TCP server per simulated meter; the first byte picks HDLC (0x7E) or wrapper (0x00).

Malformed, truncated or oversized frames and idle peers close that connection with one log
line; nothing a peer sends can stop the server or disturb other connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from adapters.dlms import wrapper
from adapters.dlms.hdlc import HdlcError
from adapters.dlms.simulator.association import Association
from adapters.dlms.simulator.hdlc_link import HdlcLink
from adapters.dlms.simulator.limits import ConnectionDropped, Limits, ProtocolViolation
from adapters.dlms.simulator.meter import SimulatedMeter
from adapters.dlms.simulator.state import StateError
from adapters.dlms.wrapper import WrapperError

log = logging.getLogger(__name__)

LOGICAL_DEVICE_WPORT = 1


class MeterServer:
    """Serves one meter on one TCP port."""

    def __init__(self, meter: SimulatedMeter, host: str, port: int, limits: Limits) -> None:
        self.meter, self.host, self.port, self.limits = meter, host, port, limits
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on the meter's port."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def close(self) -> None:
        """Stop listening and close every open connection."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        address = writer.get_extra_info("peername")
        peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        serial = self.meter.serial
        try:
            first = await asyncio.wait_for(reader.read(1), self.limits.idle_timeout)
            if first == b"\x7e":
                await HdlcLink(self.meter, peer, self.limits, reader, writer).run(first)
            elif first == b"\x00":
                await self._wrapper(reader, writer, peer, first)
            elif first:
                log.warning(
                    "meter %s, %s: first byte 0x%02X is neither HDLC (0x7E) nor wrapper (0x00); "
                    "connection closed",
                    serial,
                    peer,
                    first[0],
                )
        except TimeoutError:
            log.info(
                "meter %s, %s: idle or incomplete frame timeout; connection closed", serial, peer
            )
        except asyncio.IncompleteReadError as exc:
            log.warning(
                "meter %s, %s: truncated frame (%d of %s bytes); connection closed",
                serial,
                peer,
                len(exc.partial),
                exc.expected,
            )
        except ConnectionDropped as exc:
            log.info("meter %s, %s: %s", serial, peer, exc)
        except (WrapperError, HdlcError, ProtocolViolation, StateError) as exc:
            log.warning("meter %s, %s: %s; connection closed", serial, peer, exc)
        except (ConnectionError, OSError) as exc:
            log.info("meter %s, %s: connection lost: %s", serial, peer, exc)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("meter %s, %s: unexpected error; connection closed", serial, peer)
        finally:
            self._connections.discard(task)
            writer.close()
            # Cancelled by close(): finish quietly (asyncio logs a task that ends cancelled).
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _wrapper(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str, first: bytes
    ) -> None:
        association: Association | None = None
        while True:
            if not first:
                first = await asyncio.wait_for(reader.read(1), self.limits.idle_timeout)
                if not first:
                    return
            frame = await asyncio.wait_for(
                wrapper.read_frame(reader, max_apdu_len=self.limits.max_apdu, first=first),
                self.limits.frame_timeout,
            )
            first = b""
            if frame.destination != LOGICAL_DEVICE_WPORT:
                raise ProtocolViolation(
                    f"destination wPort {frame.destination} is not the logical device "
                    f"{LOGICAL_DEVICE_WPORT}"
                )
            if association is None or association.client_sap != frame.source:
                association = Association(self.meter, frame.source, peer)
            response = association.handle(frame.apdu)
            await wrapper.write_frame(writer, LOGICAL_DEVICE_WPORT, frame.source, response)
