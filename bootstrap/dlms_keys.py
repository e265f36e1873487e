"""The DLMS master key and the admin key command, wired from settings (no DLMS stack here)."""

from __future__ import annotations

from pathlib import Path

from adapters.dlms.key_vault import (
    KeyCipher,
    KeyVault,
    load_or_create_master_key,
    parse_master_key,
)
from commands.meter_keys import MeterKeyService
from commands.meters import MeterRegistry
from config.settings import Settings, SettingsError


def master_key(settings: Settings) -> bytes:
    """The key sealing DLMS secrets: ``HES_DLMS_MASTER_KEY``, else ``data_dir``'s own."""
    if settings.dlms.master_key:
        try:
            return parse_master_key(settings.dlms.master_key)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    return load_or_create_master_key(Path(settings.runtime.data_dir))


def key_service(settings: Settings, registry: MeterRegistry) -> MeterKeyService:
    """The admin key command over the PostgreSQL key vault."""
    if settings.database.url is None:
        raise SettingsError("database URL is not resolved yet")
    vault = KeyVault(
        settings.database.url, settings.database.schema, KeyCipher(master_key(settings))
    )
    return MeterKeyService(registry, vault)
