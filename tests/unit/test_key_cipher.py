"""Key vault sealing: AES-GCM round trip, binding to meter/version/kind, tamper, master key."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from uuid import uuid4

import pytest

from adapters.dlms.key_vault import (
    KeyCipher,
    KeyVaultError,
    load_or_create_master_key,
    parse_master_key,
)
from domain.meter_keys import KeyKind

MASTER = bytes(range(32))


def test_sealed_secret_opens_only_for_its_meter_version_and_kind() -> None:
    cipher = KeyCipher(MASTER)
    meter = uuid4()
    nonce, sealed = cipher.seal(meter, 3, KeyKind.EK, b"\x01" * 16)
    assert b"\x01" * 16 not in sealed
    assert cipher.open(meter, 3, KeyKind.EK, nonce, sealed) == b"\x01" * 16
    for other in (
        (uuid4(), 3, KeyKind.EK),
        (meter, 4, KeyKind.EK),
        (meter, 3, KeyKind.AK),
    ):
        with pytest.raises(KeyVaultError, match="failed authentication"):
            cipher.open(*other, nonce, sealed)


def test_tampered_ciphertext_or_another_master_key_is_refused_without_the_secret() -> None:
    meter = uuid4()
    nonce, sealed = KeyCipher(MASTER).seal(meter, 1, KeyKind.LLS, b"hunter22")
    flipped = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(KeyVaultError) as tampered:
        KeyCipher(MASTER).open(meter, 1, KeyKind.LLS, nonce, flipped)
    assert "hunter22" not in str(tampered.value)
    with pytest.raises(KeyVaultError):
        KeyCipher(bytes(32)).open(meter, 1, KeyKind.LLS, nonce, sealed)
    assert "hunter" not in repr(KeyCipher(MASTER)) and "00" not in repr(KeyCipher(MASTER))


def test_every_seal_uses_a_fresh_nonce() -> None:
    cipher = KeyCipher(MASTER)
    meter = uuid4()
    seals = {cipher.seal(meter, 1, KeyKind.AK, b"k" * 16) for _ in range(50)}
    assert len({nonce for nonce, _ in seals}) == 50


def test_master_key_from_hex_or_base64_else_a_clear_error() -> None:
    assert parse_master_key(MASTER.hex()) == MASTER
    assert parse_master_key(base64.b64encode(MASTER).decode()) == MASTER
    assert parse_master_key(base64.urlsafe_b64encode(MASTER).decode().rstrip("=")) == MASTER
    for bad in ("", "abc", MASTER.hex()[:-2], base64.b64encode(b"x" * 31).decode()):
        with pytest.raises(ValueError, match="HES_DLMS_MASTER_KEY") as error:
            parse_master_key(bad)
        assert bad == "" or bad not in str(error.value)


def test_master_key_file_is_created_once_with_owner_only_access(tmp_path: Path) -> None:
    first = load_or_create_master_key(tmp_path)
    assert len(first) == 32
    assert load_or_create_master_key(tmp_path) == first
    mode = os.stat(tmp_path / "dlms-master-key").st_mode & 0o777
    assert mode == 0o600
