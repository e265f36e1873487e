"""Readings: high-volume facts carried by JetStream, one msgpack message per meter batch."""

from __future__ import annotations

import enum
import hashlib
from datetime import datetime
from uuid import UUID

import msgspec


class Quality(enum.IntFlag):
    """Quality flags of a reading (combinable)."""

    VALID = 0
    ESTIMATED = 1
    SUSPECT = 2
    """Passed validation but looks wrong (e.g. an outage's 0 V)."""
    MISSING = 4
    """A gap filled in by the head-end, not measured."""
    CLOCK_ADJUSTED = 8
    """The meter's clock was corrected around this reading."""
    UNIT_UNVERIFIED = 16
    """The meter reported no known unit (or scaler) for it: stored as read, not verified."""


class Source(enum.IntEnum):
    """How a reading reached the head-end."""

    DLMS_PULL = 1
    DLMS_PUSH = 2
    HTTP = 3
    NATS = 4
    SIMULATOR = 5


class Reading(msgspec.Struct, frozen=True, array_like=True):
    """One value of one quantity at one instant, in the quantity's unit (scaler applied)."""

    quantity: int
    """``domain.obis.Quantity.id``."""
    ts: datetime
    """UTC."""
    value: float
    quality: int = Quality.VALID


class MeterBatch(msgspec.Struct, frozen=True, array_like=True):
    """Readings of one meter, as one JetStream message (``hes.readings.<partition>.<meter>``)."""

    meter: UUID
    region: str
    source: int
    readings: list[Reading]
    received_at: datetime
    """When the head-end accepted the batch (for ingest-to-commit latency)."""

    def message_id(self) -> str:
        """Deduplication id: the same readings of the same meter give the same id."""
        keys = sorted([(r.quantity, r.ts) for r in self.readings])
        return hashlib.blake2b(
            self.meter.bytes + _key_encoder.encode(keys), digest_size=16
        ).hexdigest()


_encoder = msgspec.msgpack.Encoder()
_key_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(MeterBatch)


def encode_batch(batch: MeterBatch) -> bytes:
    """msgpack bytes of a batch."""
    return _encoder.encode(batch)


def decode_batch(data: bytes) -> MeterBatch:
    """A batch from msgpack bytes; raises a ``msgspec`` error if malformed."""
    return _decoder.decode(data)


def partition_of(area: str, partitions: int) -> int:
    """Stable partition number of a meter group (same on every process and version)."""
    digest = hashlib.blake2b(area.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % partitions
