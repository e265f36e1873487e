"""DLMS security suite 0 (AES-GCM-128): ciphered APDUs and HLS-GMAC (Green Book 9.2).

The nonce is the sender's system title (8 bytes) followed by its invocation counter (4
bytes); the tag is truncated to 12 bytes. Security control byte: bits 0-3 suite, bit 4
authentication, bit 5 encryption (0x10, 0x20, 0x30 here; broadcast key and compression
are refused).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from adapters.dlms.axdr import AxdrError, decode_length, encode_length

TAG_LEN = 12
SC_AUTHENTICATED = 0x10
SC_ENCRYPTED = 0x20
SC_AUTHENTICATED_ENCRYPTED = 0x30
GENERAL_GLO_CIPHERING = 0xDB
MAX_INVOCATION_COUNTER = 0xFFFF_FFFF

GLO_TAGS: dict[int, int] = {
    0x01: 0x21,  # initiate-request -> glo-initiate-request
    0x08: 0x28,  # initiate-response -> glo-initiate-response
    0xC0: 0xC8,  # get-request -> glo-get-request
    0xC1: 0xC9,  # set-request -> glo-set-request
    0xC3: 0xCB,  # action-request -> glo-action-request
    0xC4: 0xCC,  # get-response -> glo-get-response
    0xC5: 0xCD,  # set-response -> glo-set-response
    0xC7: 0xCF,  # action-response -> glo-action-response
}
"""Plain xDLMS APDU tag -> its service-specific global-ciphering tag."""
PLAIN_TAGS: dict[int, int] = {glo: plain for plain, glo in GLO_TAGS.items()}


class CipherError(ValueError):
    """An APDU could not be ciphered or deciphered; the message says which rule failed."""


@dataclass(frozen=True, slots=True)
class Keys:
    """A global key set: block cipher key EK and authentication key AK (16 bytes each)."""

    ek: bytes
    ak: bytes

    def __post_init__(self) -> None:
        for name, key in (("ek", self.ek), ("ak", self.ak)):
            if len(key) != 16:
                raise CipherError(f"{name}: suite 0 needs a 16-byte key, got {len(key)} bytes")


@dataclass(frozen=True, slots=True)
class Deciphered:
    """A deciphered APDU and the security header it came with."""

    apdu: bytes
    security_control: int
    invocation_counter: int
    system_title: bytes
    general: bool
    """True when it came as general-glo-ciphering (0xDB), False for service-specific glo."""


def _check(security_control: int, system_title: bytes, invocation_counter: int) -> None:
    if security_control & 0x0F != 0:
        raise CipherError(f"security suite {security_control & 0x0F} is not supported (only 0)")
    if security_control & 0xC0:
        raise CipherError("broadcast keys and compression are not supported")
    if not security_control & 0x30:
        raise CipherError("security control has neither authentication nor encryption")
    if len(system_title) != 8:
        raise CipherError(f"system title must be 8 bytes, got {len(system_title)}")
    if not 0 <= invocation_counter <= MAX_INVOCATION_COUNTER:
        raise CipherError(f"invocation counter {invocation_counter} outside 0..2^32-1")


@functools.lru_cache(maxsize=4096)
def _aes(key: bytes) -> algorithms.AES:
    # Checking and wrapping the key costs as much as deciphering a push; do it once per key.
    return algorithms.AES(key)


def _iv(system_title: bytes, invocation_counter: int) -> bytes:
    return system_title + invocation_counter.to_bytes(4, "big")


def protect(
    security_control: int, system_title: bytes, invocation_counter: int, keys: Keys, plain: bytes
) -> bytes:
    """Cipher ``plain``; return SC || IC || (C or P) || (T when authenticated)."""
    _check(security_control, system_title, invocation_counter)
    header = bytes((security_control,)) + invocation_counter.to_bytes(4, "big")
    enc = Cipher(_aes(keys.ek), modes.GCM(_iv(system_title, invocation_counter)))
    encryptor = enc.encryptor()
    authenticated = bool(security_control & SC_AUTHENTICATED)
    if security_control & SC_ENCRYPTED:
        if authenticated:
            encryptor.authenticate_additional_data(bytes((security_control,)) + keys.ak)
        body = encryptor.update(plain) + encryptor.finalize()
    else:
        encryptor.authenticate_additional_data(bytes((security_control,)) + keys.ak + plain)
        encryptor.finalize()
        body = plain
    return header + body + (encryptor.tag[:TAG_LEN] if authenticated else b"")


def unprotect(content: bytes, system_title: bytes, keys: Keys) -> tuple[int, int, bytes]:
    """Decipher SC || IC || payload from ``system_title``; return (SC, IC, plain APDU)."""
    if len(content) < 5:
        raise CipherError(f"ciphered content of {len(content)} bytes has no security header")
    security_control = content[0]
    invocation_counter = int.from_bytes(content[1:5], "big")
    _check(security_control, system_title, invocation_counter)
    payload = content[5:]
    authenticated = bool(security_control & SC_AUTHENTICATED)
    if authenticated and len(payload) < TAG_LEN:
        raise CipherError("ciphered content is shorter than its authentication tag")
    body, tag = (payload[:-TAG_LEN], payload[-TAG_LEN:]) if authenticated else (payload, b"")
    iv = _iv(system_title, invocation_counter)
    if not authenticated:
        # Encryption-only APDUs carry no tag: GCM without tag check is CTR mode.
        return security_control, invocation_counter, _ctr(keys.ek, iv, body)
    gcm = modes.GCM(iv, tag, min_tag_length=TAG_LEN)
    decryptor = Cipher(_aes(keys.ek), gcm).decryptor()
    try:
        if security_control & SC_ENCRYPTED:
            decryptor.authenticate_additional_data(bytes((security_control,)) + keys.ak)
            plain = decryptor.update(body) + decryptor.finalize()
        else:
            decryptor.authenticate_additional_data(bytes((security_control,)) + keys.ak + body)
            decryptor.finalize()
            plain = body
    except InvalidTag:
        raise CipherError(
            "authentication tag mismatch: wrong keys, system title or invocation counter, "
            "or the APDU was altered"
        ) from None
    return security_control, invocation_counter, plain


def _ctr(ek: bytes, iv: bytes, body: bytes) -> bytes:
    # GCM encrypts with CTR starting at counter block J0 + 1 = IV || 00000002.
    decryptor = Cipher(_aes(ek), modes.CTR(iv + b"\x00\x00\x00\x02")).decryptor()
    return decryptor.update(body) + decryptor.finalize()


def gmac_tag(system_title: bytes, invocation_counter: int, keys: Keys, challenge: bytes) -> bytes:
    """HLS-GMAC tag: GMAC(EK, title || IC, 0x10 || AK || challenge) truncated to 12 bytes."""
    content = protect(SC_AUTHENTICATED, system_title, invocation_counter, keys, challenge)
    return content[-TAG_LEN:]


def hls_response(
    system_title: bytes, invocation_counter: int, keys: Keys, challenge: bytes
) -> bytes:
    """f(challenge) of HLS mechanism 5: 0x10 || IC || GMAC tag (17 bytes)."""
    tag = gmac_tag(system_title, invocation_counter, keys, challenge)
    return bytes((SC_AUTHENTICATED,)) + invocation_counter.to_bytes(4, "big") + tag


def verify_hls_response(response: bytes, system_title: bytes, keys: Keys, challenge: bytes) -> int:
    """Check f(challenge) computed by the peer with ``system_title``; return its IC."""
    if len(response) != 5 + TAG_LEN or response[0] != SC_AUTHENTICATED:
        raise CipherError("HLS-GMAC response must be 0x10 || IC(4) || tag(12)")
    invocation_counter = int.from_bytes(response[1:5], "big")
    expected = gmac_tag(system_title, invocation_counter, keys, challenge)
    if expected != response[5:]:
        raise CipherError("HLS-GMAC tag mismatch: the peer does not hold the same keys")
    return invocation_counter


def cipher_apdu(
    apdu: bytes,
    *,
    security_control: int,
    system_title: bytes,
    invocation_counter: int,
    keys: Keys,
    general: bool,
) -> bytes:
    """Wrap a plain APDU in general-glo-ciphering (``general``) or its service-specific glo tag."""
    if not apdu:
        raise CipherError("empty APDU")
    content = protect(security_control, system_title, invocation_counter, keys, apdu)
    if general:
        return (
            bytes((GENERAL_GLO_CIPHERING, len(system_title)))
            + system_title
            + encode_length(len(content))
            + content
        )
    glo = GLO_TAGS.get(apdu[0])
    if glo is None:
        raise CipherError(f"APDU tag 0x{apdu[0]:02X} has no service-specific glo form")
    return bytes((glo,)) + encode_length(len(content)) + content


def is_ciphered(apdu: bytes) -> bool:
    """Whether the APDU is general-glo or service-specific glo ciphered."""
    return bool(apdu) and (apdu[0] == GENERAL_GLO_CIPHERING or apdu[0] in PLAIN_TAGS)


def decipher_apdu(apdu: bytes, *, keys: Keys, peer_system_title: bytes | None) -> Deciphered:
    """Unwrap a general-glo or service-specific glo APDU sent by the peer.

    General-glo-ciphering carries the sender's system title; an empty one falls back to
    ``peer_system_title``, which service-specific glo APDUs always use.
    """
    if not apdu:
        raise CipherError("empty APDU")
    try:
        if apdu[0] == GENERAL_GLO_CIPHERING:
            title_len, pos = decode_length(apdu, 1)
            title = apdu[pos : pos + title_len]
            if len(title) != title_len:
                raise CipherError("general-glo-ciphering: truncated system title")
            pos += title_len
            general = True
        elif apdu[0] in PLAIN_TAGS:
            title, pos, general = b"", 1, False
        else:
            raise CipherError(f"APDU tag 0x{apdu[0]:02X} is not a ciphered APDU")
        length, pos = decode_length(apdu, pos)
    except AxdrError as exc:
        raise CipherError(f"ciphered APDU header: {exc}") from None
    content = apdu[pos:]
    if len(content) != length:
        raise CipherError(f"ciphered APDU says {length} content bytes, has {len(content)}")
    sender = title or peer_system_title
    if sender is None:
        raise CipherError("the sender's system title is not known")
    security_control, invocation_counter, plain = unprotect(content, sender, keys)
    if not general and plain[:1] != bytes((PLAIN_TAGS[apdu[0]],)):
        raise CipherError(
            f"glo tag 0x{apdu[0]:02X} does not match the deciphered APDU tag "
            f"0x{plain[0] if plain else 0:02X}"
        )
    return Deciphered(plain, security_control, invocation_counter, sender, general)
