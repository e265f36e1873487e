"""Events a meter writes into its own event logs, classified for the head-end, deduplicated."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime, timedelta

import msgspec

STANDARD_LOG = "0.0.99.98.0.255"
DISCONNECTOR_LOG = "0.0.99.98.2.255"
EVENT_LOGS = (STANDARD_LOG, DISCONNECTOR_LOG)

DEDUP_HORIZON = timedelta(days=40)
"""How far behind a log's newest entry the aggregate still remembers entries it recorded.

Entries older than that, relative to the newest one, count as already handled: a meter's event
log is read from the last captured time, so only a clock set back by more than this could bring
an unseen entry that old, and that entry is history, not news.
"""


class MeterEventKind(enum.StrEnum):
    """What an event-log entry means to the head-end."""

    POWER_DOWN = "POWER_DOWN"
    POWER_UP = "POWER_UP"
    CLOCK_ADJUSTED = "CLOCK_ADJUSTED"
    TAMPER = "TAMPER"
    """Terminal or meter cover opened, strong magnetic field."""
    TAMPER_CLEARED = "TAMPER_CLEARED"
    RELAY_DISCONNECTED = "RELAY_DISCONNECTED"
    RELAY_CONNECTED = "RELAY_CONNECTED"
    RELAY_READY = "RELAY_READY"
    """Ready for manual reconnection."""
    OTHER = "OTHER"


# Event codes of the IDIS/Blue Book standard, fraud-detection and disconnector-control logs:
# the default table; a model profile may give its meters another (DSMR's, a vendor's).
_KINDS: dict[int, MeterEventKind] = {
    1: MeterEventKind.POWER_DOWN,
    2: MeterEventKind.POWER_UP,
    4: MeterEventKind.CLOCK_ADJUSTED,
    5: MeterEventKind.CLOCK_ADJUSTED,
    40: MeterEventKind.TAMPER,
    41: MeterEventKind.TAMPER_CLEARED,
    42: MeterEventKind.TAMPER,
    43: MeterEventKind.TAMPER_CLEARED,
    44: MeterEventKind.TAMPER,
    45: MeterEventKind.TAMPER_CLEARED,
    47: MeterEventKind.TAMPER,
    48: MeterEventKind.TAMPER_CLEARED,
    59: MeterEventKind.RELAY_READY,
    60: MeterEventKind.RELAY_DISCONNECTED,
    61: MeterEventKind.RELAY_CONNECTED,
    62: MeterEventKind.RELAY_DISCONNECTED,
    63: MeterEventKind.RELAY_CONNECTED,
    64: MeterEventKind.RELAY_DISCONNECTED,
    69: MeterEventKind.RELAY_CONNECTED,
}


def event_kind(code: int, table: dict[int, MeterEventKind] | None = None) -> MeterEventKind:
    """The kind of an event-log code in ``table`` (default IDIS); ``OTHER`` if not in it."""
    return (_KINDS if table is None else table).get(code, MeterEventKind.OTHER)


def idis_table() -> dict[int, MeterEventKind]:
    """A copy of the IDIS event-code table."""
    return dict(_KINDS)


class LogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One row of a meter's event log: which log, the event code and the meter's timestamp."""

    log: str
    code: int
    at: datetime
    """UTC."""
    kind: MeterEventKind | None = None
    """What the code means in the meter model's event table; ``None``: the IDIS table."""

    @property
    def key(self) -> tuple[str, str, int]:
        """Dedup key: (log, timestamp, code)."""
        return (self.log, self.at.isoformat(), self.code)


class LogMemory(msgspec.Struct, kw_only=True):
    """The entries of one event log recorded recently, to record each entry once."""

    newest: datetime | None = None
    seen: dict[str, datetime] = msgspec.field(default_factory=dict)
    """``"<timestamp>|<code>"`` of recorded entries within the horizon → timestamp."""

    def is_new(self, entry: LogEntry) -> bool:
        """True when the entry was not recorded yet and is within the horizon."""
        if self.newest is not None and entry.at < self.newest - DEDUP_HORIZON:
            return False
        return _token(entry) not in self.seen

    def remember(self, entry: LogEntry) -> None:
        """Note a recorded entry; forget those that fell behind the horizon."""
        self.seen[_token(entry)] = entry.at
        if self.newest is None or entry.at > self.newest:
            self.newest = entry.at
            cutoff = self.newest - DEDUP_HORIZON
            for token in [t for t, at in self.seen.items() if at < cutoff]:
                del self.seen[token]


def _token(entry: LogEntry) -> str:
    return f"{entry.at.isoformat()}|{entry.code}"


def new_entries(memory: dict[str, LogMemory], entries: Iterable[LogEntry]) -> list[LogEntry]:
    """The entries not recorded yet (each once, oldest first), given what each log remembers."""
    fresh: list[LogEntry] = []
    batch: set[tuple[str, str, int]] = set()
    for entry in sorted(entries, key=lambda e: (e.at, e.log, e.code)):
        log = memory.get(entry.log)
        if entry.key in batch or (log is not None and not log.is_new(entry)):
            continue
        batch.add(entry.key)
        fresh.append(entry)
    return fresh
