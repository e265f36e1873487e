"""The AES-GCM stream given to gurux: same bytes as the suite-0 cipher, and it checks tags."""

from __future__ import annotations

import pytest

from adapters.dlms.cipher import SC_AUTHENTICATED, SC_AUTHENTICATED_ENCRYPTED, Keys, protect
from adapters.dlms.gurux_crypto import AUTHENTICATION, ENCRYPTION, AesGcmStream

# Green Book suite-0 test keys and titles (DESIGN.md section 5).
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
TITLE = bytes.fromhex("4D4D4D0000BC614E")
IC = 0x01234567
IV = TITLE + IC.to_bytes(4, "big")
PLAIN = bytes.fromhex("C01C100000001C0100080000FFFF0200")


def _cipher(security: int, aad: bytes, plain: bytes) -> AesGcmStream:
    stream = AesGcmStream(security, True, EK, aad, IV, None)
    stream.write(plain)
    return stream


def test_authenticated_encryption_matches_the_suite0_cipher() -> None:
    stream = _cipher(0x30, bytes((SC_AUTHENTICATED_ENCRYPTED,)) + AK, PLAIN)
    ciphertext = bytes(stream.flushFinalBlock())
    expected = protect(SC_AUTHENTICATED_ENCRYPTED, TITLE, IC, Keys(EK, AK), PLAIN)
    assert (
        bytes((SC_AUTHENTICATED_ENCRYPTED,))
        + IC.to_bytes(4, "big")
        + ciphertext
        + bytes(stream.tag)
        == expected
    )


def test_authentication_only_tag_matches_the_suite0_cipher() -> None:
    aad = bytes((SC_AUTHENTICATED,)) + AK + PLAIN
    stream = AesGcmStream(AUTHENTICATION, True, EK, aad, IV, None)
    stream.flushFinalBlock()
    expected = protect(SC_AUTHENTICATED, TITLE, IC, Keys(EK, AK), PLAIN)
    assert bytes(stream.tag) == expected[-12:]


def test_deciphering_verifies_the_tag_and_refuses_tampering() -> None:
    aad = bytes((SC_AUTHENTICATED_ENCRYPTED,)) + AK
    sealed = _cipher(0x30, aad, PLAIN)
    ciphertext = bytes(sealed.flushFinalBlock())
    tag = bytes(sealed.tag)

    opened = AesGcmStream(0x30, True, EK, aad, IV, bytearray(tag))  # as gurux calls it
    opened.write(ciphertext)
    assert bytes(opened.flushFinalBlock()) == PLAIN

    flipped = bytes([ciphertext[0] ^ 0x01]) + ciphertext[1:]
    for body, mac in ((flipped, tag), (ciphertext, bytes(12))):
        bad = AesGcmStream(0x30, True, EK, aad, IV, bytearray(mac))
        bad.write(body)
        with pytest.raises(ValueError, match="Invalid tag"):
            bad.flushFinalBlock()


def test_encryption_only_is_counter_mode_both_ways() -> None:
    out = _cipher(ENCRYPTION, AK, PLAIN).flushFinalBlock()
    back = AesGcmStream(ENCRYPTION, True, EK, AK, IV, bytearray(12))
    back.write(bytes(out))
    assert bytes(back.flushFinalBlock()) == PLAIN
    assert AesGcmStream.tagsEquals(b"a" * 12, b"a" * 12)
    assert not AesGcmStream.tagsEquals(b"a" * 12, b"b" * 12)
