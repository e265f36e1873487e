"""Wrapper and HDLC framing, A-XDR and COSEM date-time, checked against independent encoders."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from dlms_cosem import dlms_data  # type: ignore[import-untyped]
from dlms_cosem.crc import CRCCCITT  # type: ignore[import-untyped]
from dlms_cosem.protocol.wrappers import (  # type: ignore[import-untyped]
    WrapperHeader,
    WrapperProtocolDataUnit,
)
from dlms_cosem.time import datetime_to_bytes  # type: ignore[import-untyped]
from gurux_dlms import GXDLMSClient
from gurux_dlms.enums import InterfaceType

from adapters.dlms import axdr, hdlc, wrapper
from adapters.dlms.axdr import AxdrError, Tag
from adapters.dlms.cosem_time import CosemTimeError, decode_datetime, encode_datetime
from adapters.dlms.hdlc import Control, HdlcError, Kind, LinkParameters
from adapters.dlms.wrapper import WrapperError

# -- wrapper ---------------------------------------------------------------------------------


def test_wrapper_matches_dlms_cosem() -> None:
    apdu = bytes.fromhex("C0010000080000010000FF0200")
    ours = wrapper.encode(16, 1, apdu)
    theirs = WrapperProtocolDataUnit(
        apdu, WrapperHeader(source_wport=16, destination_wport=1, length=len(apdu))
    ).to_bytes()
    assert ours == theirs == bytes.fromhex("000100100001000D") + apdu
    frame = wrapper.decode(ours)
    assert (frame.source, frame.destination, frame.apdu) == (16, 1, apdu)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (bytes.fromhex("0002001000010001") + b"\xc0", "wrapper version 2 is not 1"),
        (bytes.fromhex("0001001000010000"), "empty APDU"),
        (bytes.fromhex("00010010000108"), "needs 8 bytes, got 7"),
        (bytes.fromhex("0001001000010801") + bytes(2049), "length 2049 exceeds the limit 2048"),
        (bytes.fromhex("0001001000010003") + b"\xc0", "says 3 APDU bytes, frame has 1"),
    ],
)
def test_wrapper_errors_name_the_rule(frame: bytes, message: str) -> None:
    with pytest.raises(WrapperError, match=message):
        wrapper.decode(frame, max_apdu_len=2048)


def test_wrapper_refuses_oversized_apdus_and_ports() -> None:
    with pytest.raises(WrapperError, match="exceeds the wrapper limit"):
        wrapper.encode(1, 1, bytes(0x10000))
    with pytest.raises(WrapperError, match="source wPort 70000"):
        wrapper.encode(70000, 1, b"\x00")


def _reader(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def test_wrapper_stream_reading() -> None:
    frame = wrapper.encode(1, 16, b"\x61\x00")
    reader = _reader(frame + frame[:5])
    assert (await wrapper.read_frame(reader)).apdu == b"\x61\x00"
    with pytest.raises(asyncio.IncompleteReadError):
        await wrapper.read_frame(reader)
    huge = _reader(bytes.fromhex("0001000100011000"), eof=False)
    with pytest.raises(WrapperError, match="length 4096 exceeds the limit 2048"):
        await wrapper.read_frame(huge, max_apdu_len=2048)


# -- HDLC ------------------------------------------------------------------------------------


def test_crc_is_x25_and_agrees_with_dlms_cosem() -> None:
    assert hdlc.crc16(b"123456789") == 0x906E  # CRC-16/X.25 check value
    data = bytes(range(200))
    assert hdlc.crc16(data).to_bytes(2, "little") == CRCCCITT().calculate_for(data)


def test_addresses() -> None:
    assert hdlc.encode_address(16) == b"\x21"
    assert hdlc.encode_address(1, 17) == b"\x02\x23"
    assert hdlc.encode_address(1, 17, size=4) == b"\x00\x02\x00\x23"
    assert hdlc.encode_address(0x3FFF, 0x3FFF) == b"\xfe\xfe\xfe\xff"
    address, end = hdlc.parse_address(b"\x00\x02\x00\x23", 0)
    assert (address.upper, address.lower, end) == (1, 17, 4)
    with pytest.raises(HdlcError, match="1-byte HDLC address 200"):
        hdlc.encode_address(200)
    with pytest.raises(HdlcError, match="not terminated within 4 bytes"):
        hdlc.parse_address(b"\x00\x00\x00\x00\x00", 0)
    with pytest.raises(HdlcError, match="address of 3 bytes"):
        hdlc.parse_address(b"\x00\x00\x01", 0)


def test_decodes_what_gurux_sends() -> None:
    client = GXDLMSClient(
        True, 16, GXDLMSClient.getServerAddress(1, 17), interfaceType=InterfaceType.HDLC
    )
    client.hdlcSettings.maxInfoRX = 512
    snrm = bytes(client.snrmRequest())
    frame = hdlc.decode_frame(snrm[1:-1])
    assert frame.control.kind is Kind.SNRM and frame.control.poll_final
    assert (frame.destination.upper, frame.destination.lower, frame.source.upper) == (1, 17, 16)
    assert hdlc.parse_link_parameters(frame.info).max_info_rx == 512
    aarq = client.aarqRequest()[0]
    frame = hdlc.decode_frame(bytes(aarq)[1:-1])
    assert frame.control.kind is Kind.I and frame.info.startswith(hdlc.LLC_REQUEST)
    assert frame.info[3] == 0x60  # AARQ


def test_frame_round_trip_and_checks() -> None:
    info = hdlc.LLC_RESPONSE + bytes(range(100))
    raw = hdlc.encode_frame(b"\x21", b"\x02\x23", Control(Kind.I, True, 3, 5), info, True)
    assert raw[0] == raw[-1] == 0x7E and raw[1] == 0xA8  # type 3, segmentation bit
    frame = hdlc.decode_frame(raw[1:-1])
    assert frame.segmented and frame.info == info
    assert (frame.control.send_seq, frame.control.receive_seq) == (3, 5)
    hcs_broken = bytearray(raw[1:-1])
    hcs_broken[8] ^= 0xFF
    with pytest.raises(HdlcError, match="FCS mismatch"):
        hdlc.decode_frame(bytes(hcs_broken))
    with pytest.raises(HdlcError, match="format says"):
        hdlc.decode_frame(raw[1:-2])
    with pytest.raises(HdlcError, match="not type 3"):
        hdlc.decode_frame(b"\x90" + raw[2:-1])
    rr = hdlc.encode_frame(b"\x21", b"\x02\x23", Control(Kind.RR, True, receive_seq=6))
    assert hdlc.decode_frame(rr[1:-1]).control == Control(Kind.RR, True, 0, 6)
    with pytest.raises(HdlcError, match="exceeds the 11-bit length"):
        hdlc.encode_frame(b"\x21", b"\x03", Control(Kind.I, True), bytes(2100))


def test_control_fields() -> None:
    for kind in (Kind.SNRM, Kind.DISC, Kind.UA, Kind.DM, Kind.FRMR, Kind.UI):
        for pf in (False, True):
            control = Control(kind, pf)
            assert hdlc.parse_control(control.encode()) == control
    assert Control(Kind.SNRM, True).encode() == 0x93
    assert Control(Kind.UA, True).encode() == 0x73
    assert Control(Kind.I, True, 0, 0).encode() == 0x10
    with pytest.raises(HdlcError, match="unknown control field 0xFF"):
        hdlc.parse_control(0xFF)


def test_link_parameters() -> None:
    params = LinkParameters(max_info_tx=1024, max_info_rx=128, window_tx=1, window_rx=1)
    assert hdlc.parse_link_parameters(params.encode()) == params
    assert hdlc.parse_link_parameters(b"") == LinkParameters()
    with pytest.raises(HdlcError, match="format 0x81, group 0x80"):
        hdlc.parse_link_parameters(b"\x82\x80\x00")
    with pytest.raises(HdlcError, match="bad length 3"):
        hdlc.parse_link_parameters(b"\x81\x80\x05\x05\x03\x00\x00\x80")


async def test_reading_frames_from_a_stream() -> None:
    a = hdlc.encode_frame(b"\x21", b"\x03", Control(Kind.RR, True, receive_seq=1))
    b = hdlc.encode_frame(b"\x21", b"\x03", Control(Kind.I, True), b"\xe6\xe7\x00\x7e\x7e")
    # back-to-back frames may share one flag; 0x7E inside a frame is data (length-delimited)
    reader = _reader(a + b[1:] + a[:4])
    assert await hdlc.read_frame(reader) == a[1:-1]
    assert await hdlc.read_frame(reader) == b[1:-1]
    with pytest.raises(asyncio.IncompleteReadError):
        await hdlc.read_frame(reader)
    with pytest.raises(HdlcError, match="does not start an HDLC type 3 frame"):
        await hdlc.read_frame(_reader(b"\x7e\x7e\x41\x42"))
    with pytest.raises(HdlcError, match="does not end with the 0x7E flag"):
        await hdlc.read_frame(_reader(a[:-1] + b"\x00"))


# -- A-XDR and date-time ---------------------------------------------------------------------


def test_axdr_matches_dlms_cosem_encoder() -> None:
    pairs = [
        (axdr.u32(123456), dlms_data.DoubleLongUnsignedData(123456)),
        (axdr.i8(-3), dlms_data.IntegerData(-3)),
        (axdr.u16(2301), dlms_data.UnsignedLongData(2301)),
        (axdr.octets(b"HES"), dlms_data.OctetStringData(b"HES")),
        (axdr.visible("SIM0000001"), dlms_data.VisibleStringData("SIM0000001")),
        (axdr.enum_(30), dlms_data.EnumData(30)),
    ]
    for ours, theirs in pairs:
        assert axdr.encode(ours) == theirs.to_bytes()


def test_axdr_round_trip_of_nested_values() -> None:
    value = axdr.array(
        [
            axdr.structure(
                [
                    axdr.octets(bytes(12)),
                    axdr.u32(0xFFFFFFFF),
                    axdr.Data(Tag.LONG64, -(1 << 63)),
                    axdr.Data(Tag.FLOAT64, 1.5),
                    axdr.Data(Tag.BIT_STRING, "1011001"),
                    axdr.Data(Tag.DATE_TIME, bytes(12)),
                    axdr.NULL,
                ]
            )
        ]
        * 200
    )
    encoded = axdr.encode(value)
    assert encoded[:4] == b"\x01\x81\xc8\x02"  # array of 200: long-form length
    assert axdr.decode_all(encoded) == value


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x06\x00\x00", "needs 4 bytes"),
        (b"\x07", "unknown data type tag 7"),
        (b"\x01\x05\x11", "cannot fit"),
        (b"\x09\x84\xff\xff\xff\xff", "needs 4294967295 bytes"),
        (b"\x09\x85\x00", "length of 5 bytes is not supported"),
        (b"\x0a\x01\xff", "not valid text"),
        (b"\x02\x01" * 20 + b"\x00", "nesting deeper than 16"),
        (b"\x11\x01\x11", "1 bytes left after the value"),
    ],
)
def test_axdr_errors(raw: bytes, message: str) -> None:
    with pytest.raises(AxdrError, match=message):
        axdr.decode_all(raw)


def test_axdr_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(AxdrError, match="does not fit LONG_UNSIGNED"):
        axdr.encode(axdr.u16(70000))
    with pytest.raises(AxdrError, match="DATE_TIME needs 12 bytes"):
        axdr.encode(axdr.Data(Tag.DATE_TIME, bytes(5)))


def test_cosem_datetime_agrees_with_dlms_cosem() -> None:
    when = datetime(2024, 3, 31, 1, 59, 58, 120000, tzinfo=UTC)
    ours, theirs = encode_datetime(when), datetime_to_bytes(when)
    assert ours[4] == 7 and theirs[4] == 0xFF  # we name the weekday (Sunday), they leave it open
    assert ours[:4] + ours[5:] == theirs[:4] + theirs[5:]
    assert decode_datetime(encode_datetime(when)) == when
    cet = datetime(2024, 1, 15, 12, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=1)))
    theirs = datetime_to_bytes(cet)  # local 13:00, deviation -60 (Green Book sign)
    assert theirs[5] == 13 and int.from_bytes(theirs[9:11], "big", signed=True) == -60
    assert decode_datetime(theirs) == datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
    unspecified = bytes.fromhex("07E8010F010C0000FF800000")  # deviation 0x8000: meter time
    assert decode_datetime(unspecified) == datetime(2024, 1, 15, 12, 0, tzinfo=UTC)


def test_cosem_datetime_errors() -> None:
    with pytest.raises(CosemTimeError, match="12 octets, got 5"):
        decode_datetime(bytes(5))
    with pytest.raises(CosemTimeError, match="wildcards"):
        decode_datetime(bytes.fromhex("FFFF03FE0702000000800000"))
    with pytest.raises(CosemTimeError, match="not a valid instant"):
        decode_datetime(bytes.fromhex("07E8021E010C000000000000"))  # 30 February
    with pytest.raises(CosemTimeError, match="timezone-aware"):
        encode_datetime(datetime(2024, 1, 1))
