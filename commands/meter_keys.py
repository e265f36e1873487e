"""Setting a meter's DLMS secrets: stored encrypted by a key store, recorded as an event."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol
from uuid import UUID

import msgspec

from commands.context import CommandContext
from commands.meters import MeterRegistry
from commands.policy import authorize
from domain.errors import FieldError, ValidationFailed
from domain.meter_keys import KeyKind, MeterKeys

SYSTEM_TITLE_BYTES = 8


class KeyStore(Protocol):
    """Where secrets live, encrypted at rest, one set per (meter, key version)."""

    def lock(self, meter: UUID) -> AbstractContextManager[None]:
        """Hold the meter's key lock: key changes of one meter run one at a time."""
        ...

    def load(self, meter: UUID, version: int) -> MeterKeys:
        """The secrets stored as ``version`` (empty for version 0 or none stored)."""
        ...

    def store(self, meter: UUID, version: int, keys: MeterKeys, *, keep_counters: bool) -> None:
        """Store ``keys`` as ``version``; carry invocation counters over when the EK is kept."""
        ...

    def set_system_title(self, meter: UUID, system_title: bytes) -> None:
        """Record the meter's DLMS system title; ``Conflict`` when another meter has it."""
        ...


class KeyChange(msgspec.Struct, frozen=True, kw_only=True):
    """What setting keys did (never the keys themselves)."""

    meter: UUID
    key_version: int
    changed: list[KeyKind]
    """Kinds whose secret changed; empty when the given secrets were already in force."""


class MeterKeyService:
    """Admin command: set some or all of a meter's secrets."""

    def __init__(self, registry: MeterRegistry, store: KeyStore) -> None:
        self.registry = registry
        self.store = store

    def set_keys(
        self,
        meter: UUID,
        keys: MeterKeys,
        ctx: CommandContext,
        system_title: bytes | None = None,
    ) -> KeyChange:
        """Store the secrets under a new key version and record which kinds changed.

        ``system_title`` (8 bytes, not secret) identifies the meter's ciphered pushes.
        """
        authorize(ctx.actor, "setMeterKeys")
        if system_title is not None and len(system_title) != SYSTEM_TITLE_BYTES:
            raise ValidationFailed(
                [FieldError("systemTitle", "format", "system title must be 8 bytes (16 hex)")]
            )
        with self.store.lock(meter):
            current_version = self.registry.get(meter).key_version
            if system_title is not None:
                self.store.set_system_title(meter, system_title)
            current = self.store.load(meter, current_version)
            old = current.as_dict()
            changed = [kind for kind, value in keys.as_dict().items() if old.get(kind) != value]
            if not changed:
                return KeyChange(meter=meter, key_version=current_version, changed=[])
            self.store.store(
                meter,
                current_version + 1,
                keys.merged_over(current),
                # The nonce is (system title, IC) under the EK: same EK, counters go on.
                keep_counters=KeyKind.EK not in changed,
            )
            version = self.registry.change_security_keys(meter, changed, current_version, ctx)
        return KeyChange(meter=meter, key_version=version, changed=changed)
