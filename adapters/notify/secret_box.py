"""Webhook secrets at rest: AES-256-GCM under a deployment key, bound to the subscription id.

The notifier must sign every delivery with the subscription's secret, so the secret cannot be
stored as a one-way hash; it is stored encrypted instead. The key comes from
``HES_NOTIFICATION_KEY`` (32 bytes, URL-safe base64) or, when unset, from
``<data_dir>/notification-key`` (created with mode 0600 on first use, like the JWT secret).
Every process that creates subscriptions or delivers notifications must use the same key.
The subscription id is the associated data, so a ciphertext copied to another row fails to open.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.key_file import load_or_create_key_file

KEY_FILE = "notification-key"
_VERSION = b"\x01"
_NONCE_BYTES = 12


class SecretBoxError(ValueError):
    """A key that is not 32 bytes of base64, or a ciphertext that does not open with it."""


def new_webhook_secret() -> str:
    """A fresh signing secret: ``whsec_`` + 32 random bytes in base64 (Standard Webhooks)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def parse_key(text: str) -> bytes:
    """The 32-byte key in URL-safe base64 ``text``; raises ``SecretBoxError`` otherwise."""
    clean = text.strip()
    try:
        key = base64.b64decode(clean + "=" * (-len(clean) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretBoxError(f"notification key is not base64: {exc}") from None
    if len(key) != 32:
        raise SecretBoxError(f"notification key must be 32 bytes, got {len(key)}")
    return key


def load_or_create_key(data_dir: Path) -> bytes:
    """The key kept in ``data_dir/notification-key`` (created, mode 0600, on first use)."""
    text = load_or_create_key_file(
        data_dir / KEY_FILE, lambda: base64.urlsafe_b64encode(os.urandom(32)).decode()
    )
    return parse_key(text)


class SecretBox:
    """Seals and opens webhook secrets for one subscription id each."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SecretBoxError("the notification key must be 32 bytes")
        self._aead = AESGCM(key)

    def new_secret(self) -> str:
        """A fresh webhook signing secret (``new_webhook_secret``)."""
        return new_webhook_secret()

    def seal(self, subscription: UUID, secret: str) -> bytes:
        """Version byte, nonce and ciphertext of ``secret`` bound to ``subscription``."""
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, secret.encode(), subscription.bytes)

    def open(self, subscription: UUID, sealed: bytes) -> str:
        """The secret sealed for ``subscription``; raises ``SecretBoxError`` if it does not open."""
        if sealed[:1] != _VERSION or len(sealed) < 1 + _NONCE_BYTES + 16:
            raise SecretBoxError("unknown sealed-secret format")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, subscription.bytes).decode()
        except InvalidTag:
            raise SecretBoxError(
                "webhook secret does not open with this key (HES_NOTIFICATION_KEY changed?)"
            ) from None
