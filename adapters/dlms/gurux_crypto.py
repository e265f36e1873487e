"""AES-GCM for gurux-dlms from ``cryptography``: fast, and it checks the tag.

Gurux's own ``GXDLMSChipperingStream`` is pure Python (most of an HLS session's CPU time)
and, when deciphering an authenticated-and-encrypted APDU, is built in "encrypt" mode and so
never compares the received tag: a tampered response would be accepted. ``install`` puts
``AesGcmStream`` in its place inside gurux's ciphering module; it keeps the interface gurux
uses (``write``, ``flushFinalBlock``, ``tag``, ``tagsEquals``) and tells encryption from
decryption by whether a received tag was given.
"""

from __future__ import annotations

import hmac
import importlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

AUTHENTICATION = 0x10
ENCRYPTION = 0x20
TAG_SIZE = 12


class AesGcmStream:
    """Drop-in for gurux's GCM stream (suite 0: AES-128-GCM, 12-byte tags)."""

    BLOCK_SIZE = 16
    TAG_SIZE = TAG_SIZE

    def __init__(
        self,
        security: int | None,
        encrypt: bool,
        block_cipher_key: bytes,
        aad: bytes | None,
        iv: bytes | None,
        tag: bytes | bytearray | None,
    ) -> None:
        self.security = int(security or 0)
        self.key = bytes(block_cipher_key)
        self.aad = bytes(aad or b"")
        self.iv = bytes(iv or b"")
        # gurux passes the received tag when deciphering, None when ciphering.
        self.received = bytes(tag) if tag else None
        if self.received is not None and len(self.received) != TAG_SIZE:
            raise ValueError("Invalid tag.")
        self.tag = bytearray(TAG_SIZE)
        self._data = bytearray()

    @staticmethod
    def tagsEquals(tag1: bytes, tag2: bytes) -> bool:
        """Constant-time comparison of two 12-byte tags."""
        return hmac.compare_digest(bytes(tag1[:TAG_SIZE]), bytes(tag2[:TAG_SIZE]))

    def write(self, data: bytes) -> None:
        """Add input (plaintext when ciphering, ciphertext when deciphering)."""
        self._data += data

    def flushFinalBlock(self) -> bytearray:
        """The output; on deciphering with a tag, ``ValueError`` unless the tag verifies."""
        data = bytes(self._data)
        self._data.clear()
        if self.security == ENCRYPTION:
            # Encryption only: GCM's counter mode from J0 + 1, no tag.
            counter = modes.CTR(self.iv + b"\x00\x00\x00\x02")
            worker = Cipher(algorithms.AES(self.key), counter).encryptor()
            return bytearray(worker.update(data) + worker.finalize())
        if self.received is not None:
            decryptor = Cipher(
                algorithms.AES(self.key), modes.GCM(self.iv, self.received, min_tag_length=TAG_SIZE)
            ).decryptor()
            decryptor.authenticate_additional_data(self.aad)
            try:
                plain = decryptor.update(data) + decryptor.finalize()
            except InvalidTag:
                raise ValueError("Decrypt failed. Invalid tag.") from None
            self.tag = bytearray(self.received)
            return bytearray(plain)
        encryptor = Cipher(algorithms.AES(self.key), modes.GCM(self.iv)).encryptor()
        encryptor.authenticate_additional_data(self.aad)
        out = encryptor.update(data) + encryptor.finalize()
        self.tag = bytearray(encryptor.tag[:TAG_SIZE])
        return bytearray(out)


def install() -> None:
    """Make gurux's ciphering module use ``AesGcmStream``."""
    # ``gurux_dlms.GXDLMSChippering`` is also the name of the class the package exports.
    module = importlib.import_module("gurux_dlms.GXDLMSChippering")
    module.GXDLMSChipperingStream = AesGcmStream  # type: ignore[attr-defined]
