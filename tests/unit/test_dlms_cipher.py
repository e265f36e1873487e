"""Suite-0 ciphering and HLS-GMAC against the Green Book vectors, round trips and tampering."""

from __future__ import annotations

import pytest

from adapters.dlms.cipher import (
    GLO_TAGS,
    CipherError,
    Keys,
    cipher_apdu,
    decipher_apdu,
    gmac_tag,
    hls_response,
    is_ciphered,
    protect,
    unprotect,
    verify_hls_response,
)

# DLMS UA 1000-2 (Green Book) security suite 0 examples (Table 40: glo-get-request, Table 43:
# HLS mechanism 5).
KEYS = Keys(
    ek=bytes.fromhex("000102030405060708090A0B0C0D0E0F"),
    ak=bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"),
)
SERVER_TITLE = bytes.fromhex("4D4D4D0000BC614E")
CLIENT_TITLE = bytes.fromhex("4D4D4D0000000001")
GET_CLOCK = bytes.fromhex("C0010000080000010000FF0200")  # GET 0.0.1.0.0.255 attribute 2
IC = 0x01234567

GLO_GET_VECTORS = {
    0x10: "C81E1001234567C0010000080000010000FF020006725D910F9221D263877516",
    0x20: "C8122001234567411312FF935A47566827C467BC",
    0x30: "C81E3001234567411312FF935A47566827C467BC7D825C3BE4A77C3FCC056B6B",
}


@pytest.mark.parametrize("security_control", sorted(GLO_GET_VECTORS))
def test_glo_get_request_matches_green_book(security_control: int) -> None:
    ciphered = cipher_apdu(
        GET_CLOCK,
        security_control=security_control,
        system_title=SERVER_TITLE,
        invocation_counter=IC,
        keys=KEYS,
        general=False,
    )
    assert ciphered.hex().upper() == GLO_GET_VECTORS[security_control]
    out = decipher_apdu(ciphered, keys=KEYS, peer_system_title=SERVER_TITLE)
    assert (out.apdu, out.security_control, out.invocation_counter, out.general) == (
        GET_CLOCK,
        security_control,
        IC,
        False,
    )


def test_hls_gmac_pass_3_and_4_match_green_book() -> None:
    # Pass 3: the client answers the server's challenge StoC with its own title and IC 1.
    f_stoc = hls_response(CLIENT_TITLE, 1, KEYS, b"P6wRJ21F")
    assert f_stoc.hex().upper() == "1000000001" + "1A52FE7DD3E72748973C1E28"
    assert verify_hls_response(f_stoc, CLIENT_TITLE, KEYS, b"P6wRJ21F") == 1
    # Pass 4: the server answers the client's challenge CtoS with its title and IC 0x01234567.
    assert gmac_tag(SERVER_TITLE, IC, KEYS, b"K56iVagY").hex().upper() == (
        "FE1466AFB3DBCD4F9389E2B7"
    )


def test_hls_response_from_the_wrong_keys_or_title_is_refused() -> None:
    f_stoc = hls_response(CLIENT_TITLE, 1, KEYS, b"P6wRJ21F")
    other = Keys(KEYS.ek, bytes(16))
    with pytest.raises(CipherError, match="HLS-GMAC tag mismatch"):
        verify_hls_response(f_stoc, CLIENT_TITLE, other, b"P6wRJ21F")
    with pytest.raises(CipherError, match="HLS-GMAC tag mismatch"):
        verify_hls_response(f_stoc, SERVER_TITLE, KEYS, b"P6wRJ21F")
    with pytest.raises(CipherError, match="HLS-GMAC tag mismatch"):
        verify_hls_response(f_stoc, CLIENT_TITLE, KEYS, b"another challenge")
    with pytest.raises(CipherError, match=r"0x10 \|\| IC"):
        verify_hls_response(b"\x30" + f_stoc[1:], CLIENT_TITLE, KEYS, b"P6wRJ21F")


def test_general_glo_ciphering_carries_the_sender_title() -> None:
    response = bytes.fromhex("C401C1000600000001")
    ciphered = cipher_apdu(
        response,
        security_control=0x30,
        system_title=SERVER_TITLE,
        invocation_counter=7,
        keys=KEYS,
        general=True,
    )
    assert ciphered[:10] == b"\xdb\x08" + SERVER_TITLE
    assert is_ciphered(ciphered)
    out = decipher_apdu(ciphered, keys=KEYS, peer_system_title=None)
    assert (out.apdu, out.system_title, out.invocation_counter, out.general) == (
        response,
        SERVER_TITLE,
        7,
        True,
    )


def test_service_specific_tags_follow_the_plain_tag() -> None:
    for plain, glo in GLO_TAGS.items():
        apdu = bytes((plain,)) + b"\x01\x02"
        ciphered = cipher_apdu(
            apdu,
            security_control=0x30,
            system_title=CLIENT_TITLE,
            invocation_counter=1,
            keys=KEYS,
            general=False,
        )
        assert ciphered[0] == glo
        assert decipher_apdu(ciphered, keys=KEYS, peer_system_title=CLIENT_TITLE).apdu == apdu
    with pytest.raises(CipherError, match="0xD8 has no service-specific glo form"):
        cipher_apdu(
            b"\xd8\x01\x02",
            security_control=0x30,
            system_title=CLIENT_TITLE,
            invocation_counter=1,
            keys=KEYS,
            general=False,
        )


def _ciphered(security_control: int = 0x30) -> bytes:
    return bytes.fromhex(GLO_GET_VECTORS[security_control])


@pytest.mark.parametrize("security_control", [0x10, 0x30])
def test_any_flipped_bit_is_detected(security_control: int) -> None:
    original = _ciphered(security_control)
    for position in range(7, len(original)):  # every bit after the security header
        for bit in range(8):
            tampered = bytearray(original)
            tampered[position] ^= 1 << bit
            with pytest.raises(CipherError, match="authentication tag mismatch"):
                decipher_apdu(bytes(tampered), keys=KEYS, peer_system_title=SERVER_TITLE)


def test_wrong_keys_title_or_counter_are_detected() -> None:
    ciphered = _ciphered()
    for keys in (Keys(bytes(16), KEYS.ak), Keys(KEYS.ek, bytes(16))):
        with pytest.raises(CipherError, match="authentication tag mismatch"):
            decipher_apdu(ciphered, keys=keys, peer_system_title=SERVER_TITLE)
    with pytest.raises(CipherError, match="authentication tag mismatch"):
        decipher_apdu(ciphered, keys=KEYS, peer_system_title=CLIENT_TITLE)
    other_ic = bytearray(ciphered)
    other_ic[6] ^= 0x01  # last byte of the invocation counter
    with pytest.raises(CipherError, match="authentication tag mismatch"):
        decipher_apdu(bytes(other_ic), keys=KEYS, peer_system_title=SERVER_TITLE)


def test_malformed_ciphered_apdus_are_named() -> None:
    ciphered = _ciphered()
    with pytest.raises(CipherError, match="says 30 content bytes, has 29"):
        decipher_apdu(ciphered[:-1], keys=KEYS, peer_system_title=SERVER_TITLE)
    with pytest.raises(CipherError, match="no security header"):
        decipher_apdu(b"\xc8\x03\x30\x00\x00", keys=KEYS, peer_system_title=SERVER_TITLE)
    with pytest.raises(CipherError, match="not a ciphered APDU"):
        decipher_apdu(b"\xc0\x01", keys=KEYS, peer_system_title=SERVER_TITLE)
    with pytest.raises(CipherError, match="system title is not known"):
        decipher_apdu(ciphered, keys=KEYS, peer_system_title=None)
    with pytest.raises(CipherError, match="truncated system title"):
        decipher_apdu(b"\xdb\x08\x01\x02", keys=KEYS, peer_system_title=None)
    wrong_tag = b"\xc9" + ciphered[1:]  # glo-set-request around a GET request
    with pytest.raises(CipherError, match="glo tag 0xC9 does not match"):
        decipher_apdu(wrong_tag, keys=KEYS, peer_system_title=SERVER_TITLE)


def test_glo_tag_must_match_the_deciphered_apdu() -> None:
    content = protect(0x30, SERVER_TITLE, 5, KEYS, GET_CLOCK)
    apdu = b"\xc9" + bytes((len(content),)) + content  # glo-set-request carrying a GET
    with pytest.raises(
        CipherError, match="glo tag 0xC9 does not match the deciphered APDU tag 0xC0"
    ):
        decipher_apdu(apdu, keys=KEYS, peer_system_title=SERVER_TITLE)


@pytest.mark.parametrize(
    ("security_control", "message"),
    [
        (0x31, "security suite 1 is not supported"),
        (0x70, "broadcast keys and compression are not supported"),
        (0xB0, "broadcast keys and compression are not supported"),
        (0x00, "neither authentication nor encryption"),
    ],
)
def test_unsupported_security_control_is_refused(security_control: int, message: str) -> None:
    with pytest.raises(CipherError, match=message):
        protect(security_control, SERVER_TITLE, 1, KEYS, GET_CLOCK)
    content = bytes((security_control,)) + bytes(4) + GET_CLOCK
    with pytest.raises(CipherError, match=message):
        unprotect(content, SERVER_TITLE, KEYS)


def test_key_and_counter_rules() -> None:
    with pytest.raises(CipherError, match="ek: suite 0 needs a 16-byte key, got 15 bytes"):
        Keys(bytes(15), bytes(16))
    with pytest.raises(CipherError, match="ak: suite 0 needs a 16-byte key"):
        Keys(bytes(16), bytes(32))
    with pytest.raises(CipherError, match="system title must be 8 bytes, got 7"):
        protect(0x30, SERVER_TITLE[:7], 1, KEYS, GET_CLOCK)
    with pytest.raises(CipherError, match=r"outside 0\.\.2\^32-1"):
        protect(0x30, SERVER_TITLE, 1 << 32, KEYS, GET_CLOCK)


def test_round_trip_of_long_apdus_in_every_mode() -> None:
    apdu = b"\xc4\x02\xc1\x00" + bytes(range(256)) * 8
    for sc in (0x10, 0x20, 0x30):
        for general in (False, True):
            ciphered = cipher_apdu(
                apdu,
                security_control=sc,
                system_title=SERVER_TITLE,
                invocation_counter=0xFFFF_FFFF,
                keys=KEYS,
                general=general,
            )
            out = decipher_apdu(ciphered, keys=KEYS, peer_system_title=SERVER_TITLE)
            assert out.apdu == apdu and out.security_control == sc
