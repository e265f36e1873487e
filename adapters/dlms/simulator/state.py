"""Persisted state of a simulated meter: invocation counters, relay history, clock offset.

Written atomically (temp file, fsync, rename). The server invocation counter is reserved in
blocks: the file always holds a value no lower than any counter already used, and a restart
continues above it, so a counter (and with it an AES-GCM nonce) is never used twice.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import msgspec

from adapters.dlms.cipher import MAX_INVOCATION_COUNTER

log = logging.getLogger(__name__)

IC_RESERVATION = 1000
MAX_LOG_ENTRIES = 500


class StateError(RuntimeError):
    """The persisted state cannot be used (unreadable file, exhausted invocation counter)."""


class PersistedMeter(msgspec.Struct, forbid_unknown_fields=False):
    """On-disk form of one meter's state."""

    server_ic_reserved: int = 0
    client_ic_last: int = -1
    relay_open: list[tuple[float, float | None]] = msgspec.field(default_factory=list)
    disconnector_log: list[tuple[float, int]] = msgspec.field(default_factory=list)
    clock_offset: float = 0.0
    firmware: str = "1.0"


class FleetFile(msgspec.Struct):
    """On-disk form of fleet-wide state."""

    history_start: float


def load_history_start(state_dir: Path | None, now: float, days: int) -> float:
    """The fleet's history start: persisted on first use so restarts keep the same registers."""
    fresh = now - days * 86_400
    if state_dir is None:
        return fresh
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "fleet.json"
    if path.exists():
        try:
            return msgspec.json.decode(path.read_bytes(), type=FleetFile).history_start
        except (OSError, msgspec.DecodeError) as exc:
            raise StateError(f"{path}: unreadable fleet state: {exc}") from exc
    _write_atomic(path, msgspec.json.encode(FleetFile(fresh)))
    return fresh


def _write_atomic(path: Path, data: bytes) -> None:
    # No fsync: a simulated meter must survive its process being killed (the kernel keeps the
    # written file), not the machine losing power. An fsync per ciphered request blocked the
    # event loop of every meter in the process and was most of a firmware transfer's time.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class MeterState:
    """Live state of one meter, saved on every change that must survive a restart."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        data = PersistedMeter()
        if path is not None and path.exists():
            try:
                data = msgspec.json.decode(path.read_bytes(), type=PersistedMeter)
            except (OSError, msgspec.DecodeError) as exc:
                raise StateError(f"{path}: unreadable meter state: {exc}") from exc
        self._data = data
        if path is None:
            # Nothing persisted: start above any counter a previous run can have used
            # at up to one ciphered APDU per second on average.
            self._next_ic = max(int(time.time()), 1)
        else:
            self._next_ic = data.server_ic_reserved + 1

    def _save(self) -> None:
        if self.path is not None:
            _write_atomic(self.path, msgspec.json.encode(self._data))

    # -- invocation counters --------------------------------------------------------------
    def next_server_ic(self) -> int:
        """A fresh server invocation counter (strictly greater than all earlier ones)."""
        ic = self._next_ic
        if ic > MAX_INVOCATION_COUNTER:
            raise StateError("server invocation counter exhausted: the key set must be renewed")
        if ic > self._data.server_ic_reserved:
            self._data.server_ic_reserved = min(ic + IC_RESERVATION, MAX_INVOCATION_COUNTER)
            self._save()
        self._next_ic = ic + 1
        return ic

    @property
    def client_ic_last(self) -> int:
        """Highest client invocation counter accepted so far (-1 before the first)."""
        return self._data.client_ic_last

    def accept_client_ic(self, ic: int) -> bool:
        """Record ``ic`` if it is greater than every accepted one; False for a replay."""
        if ic <= self._data.client_ic_last:
            return False
        self._data.client_ic_last = ic
        self._save()
        return True

    # -- relay ----------------------------------------------------------------------------
    def relay_open_intervals(self) -> list[tuple[float, float | None]]:
        """Intervals during which the relay was open; the last may still be open (None)."""
        return self._data.relay_open

    @property
    def relay_connected(self) -> bool:
        """Whether the disconnector is closed now."""
        return not (self._data.relay_open and self._data.relay_open[-1][1] is None)

    def set_relay(self, connected: bool, at: float, meter_time: float) -> bool:
        """Open or close the relay at ``at``; log 62/63 at ``meter_time``. False if no change."""
        if connected == self.relay_connected:
            return False
        if connected:
            start, _ = self._data.relay_open[-1]
            self._data.relay_open[-1] = (start, at)
        else:
            self._data.relay_open.append((at, None))
        self._data.disconnector_log.append((meter_time, 63 if connected else 62))
        del self._data.disconnector_log[:-MAX_LOG_ENTRIES]
        self._save()
        return True

    def disconnector_log(self) -> list[tuple[float, int]]:
        """Disconnector control log entries (meter time, code), oldest first."""
        return self._data.disconnector_log

    # -- clock ----------------------------------------------------------------------------
    @property
    def clock_offset(self) -> float:
        """Seconds the meter clock is ahead of real time."""
        return self._data.clock_offset

    # -- firmware -------------------------------------------------------------------------
    @property
    def firmware(self) -> str:
        """The active firmware identifier (changed by an image activation)."""
        return self._data.firmware

    def set_firmware(self, identifier: str) -> None:
        """Make ``identifier`` the active firmware and save it."""
        self._data.firmware = identifier
        self._save()

    def set_clock_offset(self, offset: float) -> None:
        """Set the meter clock offset and save it."""
        self._data.clock_offset = offset
        self._save()
