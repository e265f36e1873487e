"""The DLMS model-profile catalogue, loaded once per process from settings."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from adapters.dlms.profile_files import ProfileFileError, load_catalogue
from adapters.dlms.push_layout import PushLayout
from config.settings import DlmsSettings, SettingsError
from domain.dlms_profile import ProfileCatalogue


@cache
def _catalogue(directory: Path | None, default: str, fleet_push: str) -> ProfileCatalogue:
    layout = PushLayout.parse(fleet_push)
    values = tuple(f"{obis}:{su.scaler}:{su.unit}" for obis, su in layout.values)
    try:
        return load_catalogue(directory, default, values)
    except ProfileFileError as exc:
        raise SettingsError(f"DLMS profiles (HES_DLMS_PROFILE_DIR): {exc}") from None


def profile_catalogue(dlms: DlmsSettings) -> ProfileCatalogue:
    """Built-in and ``HES_DLMS_PROFILE_DIR`` profiles; ``SettingsError`` names a bad file."""
    return _catalogue(dlms.profile_dir, dlms.default_profile, dlms.push_layout)
