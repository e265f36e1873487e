"""Loading DLMS model profiles from TOML or JSON files (format 1, ``domain.dlms_profile``).

The built-in profiles ship in ``adapters/dlms/model_profiles``; a directory of the operator's
(``HES_DLMS_PROFILE_DIR``) adds more, and a file there whose profile has a built-in's name
replaces that one. Every file is decoded and validated with msgspec and the profile's rules:
a bad file stops the start with its path, the field and the rule.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from domain.dlms_profile import ModelProfile, ProfileCatalogue

BUILTIN_DIR = Path(__file__).with_name("model_profiles")
SUFFIXES = (".toml", ".json")
MAX_FILE_BYTES = 256 * 1024


class ProfileFileError(ValueError):
    """A profile file that cannot be used; the message names the file, field and rule."""


def load_profile(path: Path) -> ModelProfile:
    """The profile in ``path`` (``.toml`` or ``.json``), checked."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProfileFileError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ProfileFileError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        if path.suffix == ".json":
            profile = msgspec.json.decode(data, type=ModelProfile)
        else:
            profile = msgspec.toml.decode(data, type=ModelProfile)
    except msgspec.ValidationError as exc:
        raise ProfileFileError(f"{path}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProfileFileError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    problems = profile.problems()
    if problems:
        detail = "; ".join(f"{p.field}: {p.message}" for p in problems)
        raise ProfileFileError(f"{path}: {detail}")
    return profile


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in SUFFIXES and p.is_file())


def load_profiles(extra_dir: Path | None = None) -> list[ModelProfile]:
    """The built-in profiles, and those of ``extra_dir`` (which replace same-named ones)."""
    by_name: dict[str, tuple[Path, ModelProfile]] = {}
    for path in _files(BUILTIN_DIR):
        profile = load_profile(path)
        by_name[profile.name] = (path, profile)
    if extra_dir is not None:
        if not extra_dir.is_dir():
            raise ProfileFileError(f"{extra_dir}: not a directory of DLMS profiles")
        own: dict[str, Path] = {}
        for path in _files(extra_dir):
            profile = load_profile(path)
            if profile.name in own:
                raise ProfileFileError(
                    f"{path}: profile {profile.name!r} is also defined in {own[profile.name]}"
                )
            own[profile.name] = path
            by_name[profile.name] = (path, profile)
    return [profile for _, profile in sorted(by_name.values(), key=lambda v: v[1].name)]


def load_catalogue(
    extra_dir: Path | None, default: str, fleet_push: tuple[str, ...]
) -> ProfileCatalogue:
    """The catalogue of every loaded profile; ``ProfileFileError`` names what is wrong."""
    try:
        return ProfileCatalogue(load_profiles(extra_dir), default, fleet_push)
    except ValueError as exc:
        if isinstance(exc, ProfileFileError):
            raise
        raise ProfileFileError(str(exc)) from None
