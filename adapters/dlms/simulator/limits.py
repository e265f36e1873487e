"""Per-connection limits of the simulated meters' servers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Timeouts and sizes that bound what one connection can make the server do."""

    idle_timeout: float = 120.0
    """Seconds without a new frame before the connection is closed."""
    frame_timeout: float = 10.0
    """Seconds to finish a frame once its first byte arrived (and to answer an RR)."""
    max_apdu: int = 2048
    """Largest APDU accepted in one wrapper frame or reassembled from HDLC segments."""
    max_info: int = 1024
    """Largest HDLC information field the server offers in UA (both directions)."""


class ProtocolViolation(Exception):
    """The peer broke the link-layer protocol; the connection is closed."""


class ConnectionDropped(Exception):
    """A configured fault: the meter drops the connection without answering."""
