"""The simulator speaks DLMS to independent clients: dlms-cosem (MIT) and gurux, over TCP.

dlms-cosem covers all six combinations of transport (wrapper, HDLC) and security (none,
LLS, HLS-GMAC suite 0); gurux covers them again, plus general-glo ciphering. For HDLC,
dlms-cosem gets ``FrameAwareTcpIO`` (see its docstring: dlms-cosem's flag scanner stalls on
frames whose FCS ends in 0x7E; its HDLC protocol logic is used unchanged).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dlms_cosem import cosem, dlms_data  # type: ignore[import-untyped]
from dlms_cosem import enumerations as E
from dlms_cosem.client import ActionError  # type: ignore[import-untyped]
from dlms_cosem.cosem.capture_object import CaptureObject  # type: ignore[import-untyped]
from dlms_cosem.cosem.selective_access import RangeDescriptor  # type: ignore[import-untyped]
from dlms_cosem.exceptions import DlmsClientException  # type: ignore[import-untyped]
from dlms_cosem.time import datetime_from_bytes  # type: ignore[import-untyped]
from dlms_cosem.utils import parse_as_dlms_data  # type: ignore[import-untyped]
from gurux_dlms import GXDateTime
from gurux_dlms.objects import (
    GXDLMSClock,
    GXDLMSData,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)

from adapters.dlms import hdlc, wrapper
from adapters.dlms.cipher import cipher_apdu, decipher_apdu
from adapters.dlms.simulator import Limits, SimulatedFleet, simulated_keys, start_simulated_meters
from tests.integration.dlms_clients import (
    CLIENT_TITLE,
    GuruxSession,
    Level,
    Transport,
    cosem_client,
)

pytestmark = pytest.mark.integration

COMBOS: list[tuple[Transport, Level]] = [
    (t, lv) for t in ("wrapper", "hdlc") for lv in ("none", "lls", "hls")
]
LIMITS = Limits(idle_timeout=5.0, frame_timeout=1.0)


def free_base_port(count: int) -> int:
    """A base port below the ephemeral range with ``count`` free ports after it."""
    for _ in range(200):
        base = random.randrange(20_000, 32_000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports")


@pytest.fixture(scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimulatedFleet]:
    state = tmp_path_factory.mktemp("dlms-sim")
    running = await start_simulated_meters(4, free_base_port(4), state_dir=state, limits=LIMITS)
    yield running
    await running.close()


def _attr(interface: Any, code: str, attribute: int) -> Any:
    return cosem.CosemAttribute(interface, cosem.Obis.from_string(code), attribute)


def _cosem_read(port: int, transport: Transport, level: Level, serial: str) -> dict[str, Any]:
    keys = simulated_keys(serial)
    client = cosem_client(port, transport, level, keys)
    now = datetime.now(UTC)
    clock_col = CaptureObject(_attr(E.CosemInterface.CLOCK, "0.0.1.0.0.255", 2))
    window = RangeDescriptor(clock_col, now - timedelta(hours=2), now)
    with client.session() as s:
        clock = parse_as_dlms_data(s.get(_attr(E.CosemInterface.CLOCK, "0.0.1.0.0.255", 2)))
        return {
            "clock": _utc(clock),
            "serial": parse_as_dlms_data(s.get(_attr(E.CosemInterface.DATA, "0.0.96.1.0.255", 2))),
            "energy": parse_as_dlms_data(
                s.get(_attr(E.CosemInterface.REGISTER, "1.0.1.8.0.255", 2))
            ),
            "scaler_unit": parse_as_dlms_data(
                s.get(_attr(E.CosemInterface.REGISTER, "1.0.1.8.0.255", 3))
            ),
            "profile": parse_as_dlms_data(
                s.get(_attr(E.CosemInterface.PROFILE_GENERIC, "1.0.99.1.0.255", 2), window)
            ),
        }


def _utc(raw: bytes) -> datetime:
    """A COSEM date-time via dlms-cosem (which returns naive datetimes for deviation 0)."""
    parsed: datetime = datetime_from_bytes(raw)[0]
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _check_reading(result: dict[str, Any], serial: str, register_now: int) -> None:
    assert abs((result["clock"] - datetime.now(UTC)).total_seconds()) < 10
    assert result["serial"] == serial
    assert result["scaler_unit"] == [0, 30]
    assert result["energy"] <= register_now
    rows = result["profile"]
    assert len(rows) in (8, 9)
    stamps = [_utc(row[0]) for row in rows]
    assert all(s.minute % 15 == 0 and s.second == 0 for s in stamps)
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(stamps))
    energies = [row[1] for row in rows]
    assert energies == sorted(energies) and energies[-1] <= result["energy"]


@pytest.mark.parametrize(("transport", "level"), COMBOS)
async def test_dlms_cosem_reads_clock_serial_register_and_profile(
    fleet: SimulatedFleet, transport: Transport, level: Level
) -> None:
    serial = fleet.serials[1]
    result = await asyncio.to_thread(_cosem_read, fleet.ports[1], transport, level, serial)
    _check_reading(result, serial, fleet.meter(1).values()["1.0.1.8.0.255"])


def _gurux_read(
    port: int, transport: Transport, level: Level, serial: str, general: bool
) -> dict[str, Any]:
    session = GuruxSession.open(
        port, transport, level, simulated_keys(serial), general_protection=general
    )
    try:
        clock = GXDLMSClock("0.0.1.0.0.255")
        session.read(clock, 2)
        number = GXDLMSData("0.0.96.1.0.255")
        session.read(number, 2)
        register = GXDLMSRegister("1.0.1.8.0.255")
        session.read(register, 3)
        session.read(register, 2)
        profile = GXDLMSProfileGeneric("1.0.99.1.0.255")
        session.read(profile, 3)
        now = datetime.now(UTC)
        reply = session.request(
            session.client.readRowsByRange(profile, now - timedelta(hours=2), now)
        )
        session.client.updateValue(profile, 2, reply.value)
        full = GXDLMSProfileGeneric("1.0.99.1.0.255")
        session.read(full, 3)
        session.read(full, 2)  # 960 rows: GET block transfer (and HDLC segmentation)
    finally:
        session.close()
    return {
        "clock": clock.time.value,
        "serial": number.value,
        "energy": register.value,
        "scaler_unit": [round(math.log10(register.scaler)), register.unit],
        "profile_rows": profile.buffer,
        "full_rows": len(full.buffer),
    }


@pytest.mark.parametrize(
    ("transport", "level", "general"),
    [(t, lv, False) for t, lv in COMBOS] + [("wrapper", "hls", True), ("hdlc", "hls", True)],
)
async def test_gurux_reads_clock_serial_register_and_profile(
    fleet: SimulatedFleet, transport: Transport, level: Level, general: bool
) -> None:
    serial = fleet.serials[1]
    result = await asyncio.to_thread(_gurux_read, fleet.ports[1], transport, level, serial, general)
    assert abs((result["clock"] - datetime.now(UTC)).total_seconds()) < 10
    assert result["serial"] == serial
    assert result["scaler_unit"] == [0, 30]
    assert result["energy"] <= fleet.meter(1).values()["1.0.1.8.0.255"]
    rows = result["profile_rows"]
    assert len(rows) in (8, 9) and [r[1] for r in rows] == sorted(r[1] for r in rows)
    assert result["full_rows"] == 960


def _gurux_segments_lists_and_clock(port: int, serial: str) -> dict[str, Any]:
    keys = simulated_keys(serial)
    out: dict[str, Any] = {}
    # small HDLC information fields: requests are segmented client to server (the HLS AARQ
    # and the ciphered GET-with-list are longer than 32 bytes), responses server to client.
    # (No GET block transfer here: gurux 1.0.203 GXDLMS.receiverReady returns only the first
    # frame of a GET-next that needs several, and its lost frames break the sequence numbers.)
    session = GuruxSession.open(port, "hdlc", "hls", keys, max_info=(32, 48))
    try:
        out["negotiated"] = (
            session.client.hdlcSettings.maxInfoTX,
            session.client.hdlcSettings.maxInfoRX,
        )
        clock, number = GXDLMSClock("0.0.1.0.0.255"), GXDLMSData("0.0.96.1.0.255")
        register = GXDLMSRegister("1.0.1.8.0.255")
        out["list"] = session.read_list([(clock, 2), (number, 2), (register, 3)])
        out["serial"] = number.value
    finally:
        session.close()
    lls = GuruxSession.open(port, "wrapper", "lls", keys)
    try:
        clock = GXDLMSClock("0.0.1.0.0.255")
        lls.read(clock, 2)
        clock.time = GXDateTime(datetime.now(UTC) + timedelta(hours=1))
        lls.request(lls.client.write(clock, 2))
        lls.read(clock, 2)
        out["moved"] = clock.time.value
        clock.time = GXDateTime(datetime.now(UTC))
        lls.request(lls.client.write(clock, 2))
    finally:
        lls.close()
    public = GuruxSession.open(port, "wrapper", "none", keys)
    try:
        profile = GXDLMSProfileGeneric("1.0.99.1.0.255")
        public.read(profile, 3)
        reply = public.request(public.client.readRowsByEntry(profile, 958, 3))
        public.client.updateValue(profile, 2, reply.value)
        out["entries"] = profile.buffer
        clock = GXDLMSClock("0.0.1.0.0.255")
        public.read(clock, 2)
        try:
            public.request(public.client.write(clock, 2))
            out["public_write"] = "allowed"
        except RuntimeError as exc:
            out["public_write"] = str(exc)
    finally:
        public.close()
    return out


async def test_gurux_segmentation_get_with_list_and_clock_setting(fleet: SimulatedFleet) -> None:
    out = await asyncio.to_thread(_gurux_segments_lists_and_clock, fleet.ports[2], fleet.serials[2])
    assert out["negotiated"] == (32, 48)
    assert out["serial"] == fleet.serials[2] and len(out["list"]) == 3
    assert abs((out["moved"] - datetime.now(UTC)).total_seconds() - 3600) < 10
    assert abs(fleet.meter(2).meter_now() - time.time()) < 10  # set back
    assert out["public_write"].startswith("DLMS error 3")  # read-write-denied
    entries = out["entries"]  # entries 958..960 of 960: the newest three rows
    assert len(entries) == 3 and [e[1] for e in entries] == sorted(e[1] for e in entries)
    newest = entries[-1][0].value
    assert abs((newest - datetime.now(UTC)).total_seconds()) < 900 + 10


def _cosem_hls_session(port: int, serial: str) -> Any:
    client = cosem_client(port, "wrapper", "hls", simulated_keys(serial))
    client.connect()
    client.associate()
    return client


def _ciphered_get(client: Any, serial: str, apdu: bytes, *, general: bool, ic: int) -> bytes:
    keys = simulated_keys(serial)
    request = cipher_apdu(
        apdu,
        security_control=0x30,
        system_title=CLIENT_TITLE,
        invocation_counter=ic,
        keys=keys.keys,
        general=general,
    )
    return bytes(client.transport.send_request(request))


GET_SERIAL = bytes.fromhex("C0014100010000600100FF0200")


def _forms_and_replay(port: int, serial: str) -> dict[str, bytes]:
    client = _cosem_hls_session(port, serial)
    ic = client.dlms_connection.client_invocation_counter
    out = {
        "glo": _ciphered_get(client, serial, GET_SERIAL, general=False, ic=ic + 1),
        "general": _ciphered_get(client, serial, GET_SERIAL, general=True, ic=ic + 2),
        "replay": _ciphered_get(client, serial, GET_SERIAL, general=True, ic=ic + 2),
        "plain": bytes(client.transport.send_request(GET_SERIAL)),
        "after": _ciphered_get(client, serial, GET_SERIAL, general=False, ic=ic + 3),
        "ic": ic.to_bytes(4, "big"),
    }
    client.disconnect()
    return out


async def test_ciphered_answers_use_the_request_form_and_replays_are_refused(
    fleet: SimulatedFleet,
) -> None:
    meter = fleet.meter(1)
    out = await asyncio.to_thread(_forms_and_replay, fleet.ports[1], meter.serial)
    keys = meter.keys.keys
    glo = decipher_apdu(out["glo"], keys=keys, peer_system_title=meter.system_title)
    assert out["glo"][0] == 0xCC and not glo.general
    assert glo.apdu == bytes.fromhex("C40141000A0A") + meter.serial.encode()
    general = decipher_apdu(out["general"], keys=keys, peer_system_title=None)
    assert out["general"][0] == 0xDB and general.system_title == meter.system_title
    assert general.invocation_counter > glo.invocation_counter
    # replay: exception-response, service-not-allowed / invocation-counter-error, least IC
    assert out["replay"][:3] == b"\xd8\x01\x06"
    ic = int.from_bytes(out["ic"], "big")
    assert int.from_bytes(out["replay"][3:], "big") == ic + 3  # the least acceptable counter
    assert out["plain"] == b"\xd8\x01\x01"  # plain APDU in a ciphered association
    assert decipher_apdu(out["after"], keys=keys, peer_system_title=meter.system_title).apdu[0] == (
        0xC4
    )


def _association_with_reused_counter(port: int, serial: str) -> str:
    first = cosem_client(port, "wrapper", "hls", simulated_keys(serial))
    with first.session():
        pass
    again = cosem_client(port, "wrapper", "hls", simulated_keys(serial))
    again.dlms_connection.client_invocation_counter = 5  # long used
    again.connect()
    try:
        again.associate()
    except DlmsClientException as exc:
        return str(exc)
    finally:
        again.disconnect()
    return "associated"


async def test_association_with_a_replayed_counter_is_rejected(fleet: SimulatedFleet) -> None:
    message = await asyncio.to_thread(
        _association_with_reused_counter, fleet.ports[2], fleet.serials[2]
    )
    assert "REJECTED_PERMANENT" in message


def _wrong_secrets(port: int, serial: str, transport: Transport) -> list[str]:
    keys = simulated_keys(serial)
    wrong = simulated_keys(serial, seed="another-seed")
    errors = []
    for level in ("lls", "hls"):
        client = cosem_client(port, transport, level, wrong)  # type: ignore[arg-type]
        client.connect()
        try:
            client.associate()
            errors.append("associated")
        except DlmsClientException as exc:
            errors.append(str(exc))
        finally:
            client.disconnect()
    ok = cosem_client(port, transport, "lls", keys)
    with ok.session() as s:
        errors.append(parse_as_dlms_data(s.get(_attr(E.CosemInterface.DATA, "0.0.96.1.0.255", 2))))
    return errors


@pytest.mark.parametrize("transport", ["wrapper", "hdlc"])
async def test_wrong_lls_password_and_hls_keys_are_rejected(
    fleet: SimulatedFleet, transport: Transport
) -> None:
    lls, hls, serial = await asyncio.to_thread(
        _wrong_secrets, fleet.ports[2], fleet.serials[2], transport
    )
    assert "REJECTED_PERMANENT" in lls and "AUTHENTICATION_FAILED: 13" in lls
    assert "REJECTED_PERMANENT" in hls and "AUTHENTICATION_FAILED: 13" in hls
    assert serial == fleet.serials[2]


def _disconnect_and_reconnect(port: int, serial: str) -> dict[str, Any]:
    keys = simulated_keys(serial)
    method = cosem.CosemMethod(
        E.CosemInterface.DISCONNECT_CONTROL, cosem.Obis.from_string("0.0.96.3.10.255"), 1
    )
    output = _attr(E.CosemInterface.DISCONNECT_CONTROL, "0.0.96.3.10.255", 2)
    control = _attr(E.CosemInterface.DISCONNECT_CONTROL, "0.0.96.3.10.255", 3)
    log = _attr(E.CosemInterface.PROFILE_GENERIC, "0.0.99.98.2.255", 2)
    result: dict[str, Any] = {}
    public = cosem_client(port, "wrapper", "none", keys)
    with public.session() as s:
        try:
            s.action(method, dlms_data.IntegerData(0).to_bytes())
            result["public"] = "allowed"
        except ActionError as exc:
            result["public"] = str(exc)
    client = cosem_client(port, "hdlc", "hls", keys)
    with client.session() as s:
        s.action(method, dlms_data.IntegerData(0).to_bytes())
        result["opened"] = (parse_as_dlms_data(s.get(output)), parse_as_dlms_data(s.get(control)))
        result["log_after_open"] = parse_as_dlms_data(s.get(log))
        s.action(
            cosem.CosemMethod(method.interface, method.instance, 2),
            dlms_data.IntegerData(0).to_bytes(),
        )
        result["closed"] = (parse_as_dlms_data(s.get(output)), parse_as_dlms_data(s.get(control)))
        result["log_after_close"] = parse_as_dlms_data(s.get(log))
    return result


async def test_disconnect_control_opens_the_relay_and_logs_62(fleet: SimulatedFleet) -> None:
    meter = fleet.meter(3)
    result = await asyncio.to_thread(_disconnect_and_reconnect, fleet.ports[3], meter.serial)
    assert result["public"] == "Unsuccessful ActionRequest: READ_WRITE_DENIED"
    assert result["opened"] == (False, 0)
    assert result["log_after_open"][-1][1] == 62
    assert _utc(result["log_after_open"][-1][0]) > datetime.now(UTC) - timedelta(minutes=1)
    assert result["closed"] == (True, 1)
    assert [row[1] for row in result["log_after_close"][-2:]] == [62, 63]
    assert meter.relay_connected


# -- malformed input: the connection closes, the server keeps serving -------------------------


async def _raw(port: int, data: bytes, *, read: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), 5) if read else b""
    finally:
        writer.close()


def _snrm(info: bytes = b"") -> bytes:
    return hdlc.encode_frame(b"\x02\x23", b"\x21", hdlc.Control(hdlc.Kind.SNRM, True), info)


@pytest.mark.parametrize(
    ("data", "log"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "first byte 0x47 is neither HDLC"),
        (bytes.fromhex("0002001000010001c0"), "wrapper version 2 is not 1"),
        (bytes.fromhex("000100100001ffff") + bytes(100), "length 65535 exceeds the limit 2048"),
        (bytes.fromhex("0001001000020001c0"), "destination wPort 2 is not the logical device"),
        (_snrm()[:-3] + b"\x00\x00\x7e", "FCS mismatch"),
        (b"\x7e\x41\x42", "does not start an HDLC type 3 frame"),
    ],
)
async def test_malformed_frames_close_the_connection(
    fleet: SimulatedFleet, caplog: pytest.LogCaptureFixture, data: bytes, log: str
) -> None:
    assert await _raw(fleet.ports[0], data) == b""  # closed without an answer
    assert any(log in r.getMessage() and fleet.serials[0] in r.getMessage() for r in caplog.records)
    result = await asyncio.to_thread(
        _cosem_read, fleet.ports[0], "wrapper", "none", fleet.serials[0]
    )
    assert result["serial"] == fleet.serials[0]


async def test_truncated_frames_and_apdus(
    fleet: SimulatedFleet, caplog: pytest.LogCaptureFixture
) -> None:
    port = fleet.ports[0]
    # a wrapper frame cut short, then the peer goes away: logged, nothing else happens
    await _raw(port, bytes.fromhex("000100100001000d") + bytes.fromhex("C00141"), read=False)
    await asyncio.sleep(0.2)
    assert any("truncated frame (3 of 13 bytes)" in r.getMessage() for r in caplog.records)
    # a frame cut short that stays open is closed by the frame timeout
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(bytes.fromhex("000100100001000d") + b"\xc0")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), LIMITS.frame_timeout + 3) == b""
    writer.close()
    # a complete frame whose APDU is cut: an exception-response, and the link stays usable
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    aarq = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F040000FE1DFFFF")
    writer.write(wrapper.encode(16, 1, aarq))
    writer.write(wrapper.encode(16, 1, bytes.fromhex("C00141000100006001")))
    await writer.drain()
    aare = await wrapper.read_frame(reader)
    assert aare.apdu[0] == 0x61 and aare.apdu[aare.apdu.index(b"\xa2\x03\x02\x01") + 4] == 0
    assert (await wrapper.read_frame(reader)).apdu == b"\xd8\x01\x03"
    writer.write(wrapper.encode(16, 1, GET_SERIAL))
    await writer.drain()
    assert (await wrapper.read_frame(reader)).apdu.endswith(fleet.serials[0].encode())
    # an APDU longer than the negotiated 1024 bytes (but within the frame limit): pdu-too-long
    writer.write(wrapper.encode(16, 1, GET_SERIAL[:-1] + bytes(1500)))
    await writer.drain()
    assert (await wrapper.read_frame(reader)).apdu == b"\xd8\x01\x04"
    writer.close()


async def test_hdlc_oversized_and_out_of_sequence_frames(
    fleet: SimulatedFleet, caplog: pytest.LogCaptureFixture
) -> None:
    port = fleet.ports[0]
    client, server = b"\x21", b"\x02\x23"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_snrm())
    await writer.drain()
    ua = hdlc.decode_frame(await hdlc.read_frame(reader))
    assert ua.control.kind is hdlc.Kind.UA
    assert hdlc.parse_link_parameters(ua.info).max_info_rx == 128
    segment = hdlc.LLC_REQUEST + bytes(125)
    for ns in range(20):  # 20 segments of 128 bytes: more than the 2048-byte APDU limit
        frame = hdlc.encode_frame(
            server, client, hdlc.Control(hdlc.Kind.I, True, ns % 8, 0), segment, True
        )
        writer.write(frame)
        await writer.drain()
        data = await reader.read(65536)
        if not data:
            break
    assert data == b""
    assert any("APDU longer than 2048 bytes" in r.getMessage() for r in caplog.records)
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        _snrm() + hdlc.encode_frame(server, client, hdlc.Control(hdlc.Kind.I, True, 3, 0), segment)
    )
    await writer.drain()
    assert await asyncio.wait_for(reader.read(65536), 5) != b""  # the UA
    assert await asyncio.wait_for(reader.read(65536), 5) == b""
    assert any("I-frame N(S)=3, expected 0" in r.getMessage() for r in caplog.records)
    writer.close()


async def test_hdlc_link_states(fleet: SimulatedFleet) -> None:
    client, server = b"\x21", b"\x02\x23"
    reader, writer = await asyncio.open_connection("127.0.0.1", fleet.ports[0])

    async def send(control: hdlc.Control, info: bytes = b"", to: bytes = server) -> hdlc.Frame:
        writer.write(hdlc.encode_frame(to, client, control, info))
        await writer.drain()
        return hdlc.decode_frame(await asyncio.wait_for(hdlc.read_frame(reader), 5))

    assert (await send(hdlc.Control(hdlc.Kind.DISC, True))).control.kind is hdlc.Kind.DM
    get = hdlc.LLC_REQUEST + GET_SERIAL
    assert (await send(hdlc.Control(hdlc.Kind.I, True), get)).control.kind is hdlc.Kind.DM
    ua = await send(hdlc.Control(hdlc.Kind.SNRM, True), hdlc.LinkParameters(2000, 600).encode())
    params = hdlc.parse_link_parameters(ua.info)
    assert (ua.control.kind, params.max_info_tx, params.max_info_rx) == (hdlc.Kind.UA, 600, 1024)
    rr = await send(hdlc.Control(hdlc.Kind.RR, True))
    assert (rr.control.kind, rr.control.receive_seq) == (hdlc.Kind.RR, 0)
    # a GET before any AARQ: exception-response in an I-frame (N(S)=0, N(R)=1)
    answer = await send(hdlc.Control(hdlc.Kind.I, True, 0, 0), get)
    assert answer.control == hdlc.Control(hdlc.Kind.I, True, 0, 1)
    assert answer.info == hdlc.LLC_RESPONSE + b"\xd8\x01\x01"
    # frames for another HDLC address are ignored; DISC ends the link
    writer.write(hdlc.encode_frame(b"\x02\x25", client, hdlc.Control(hdlc.Kind.SNRM, True)))
    assert (await send(hdlc.Control(hdlc.Kind.DISC, True))).control.kind is hdlc.Kind.UA
    writer.close()


async def test_a_stalled_peer_does_not_block_others(fleet: SimulatedFleet) -> None:
    stalled = [await asyncio.open_connection("127.0.0.1", fleet.ports[0]) for _ in range(5)]
    for _, writer in stalled:
        writer.write(b"\x7e\xa0")  # half a frame, then silence
        await writer.drain()
    result = await asyncio.to_thread(_cosem_read, fleet.ports[0], "hdlc", "lls", fleet.serials[0])
    assert result["serial"] == fleet.serials[0]
    for reader, writer in stalled:
        assert await asyncio.wait_for(reader.read(), LIMITS.frame_timeout + 3) == b""
        writer.close()


async def test_idle_connections_are_closed() -> None:
    base = free_base_port(1)
    fleet = await start_simulated_meters(
        1, base, limits=Limits(idle_timeout=0.3, frame_timeout=0.3)
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", base)
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert asyncio.get_running_loop().time() - started < 3
        writer.close()
    finally:
        await fleet.close()


# -- persistence, push and scale -------------------------------------------------------------


def _meter_counter_after_hls(port: int, serial: str) -> int:
    client = cosem_client(port, "wrapper", "hls", simulated_keys(serial))
    with client.session():
        return int(client.dlms_connection.meter_invocation_counter)


async def test_server_invocation_counter_and_relay_survive_a_restart(tmp_path: Path) -> None:
    base = free_base_port(1)
    first = await start_simulated_meters(1, base, state_dir=tmp_path)
    try:
        before = await asyncio.to_thread(_meter_counter_after_hls, base, first.serials[0])
        first.meter(0).set_relay(connected=False)
    finally:
        await first.close()
    second = await start_simulated_meters(1, base, state_dir=tmp_path)
    try:
        after = await asyncio.to_thread(_meter_counter_after_hls, base, second.serials[0])
        assert after > before
        assert not second.meter(0).relay_connected
    finally:
        await second.close()


async def test_pushes_arrive_as_data_notifications(tmp_path: Path) -> None:
    from dlms_cosem.protocol.xdlms import DataNotification  # type: ignore[import-untyped]

    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_push(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frame = await wrapper.read_frame(reader)
        assert (frame.source, frame.destination) == (1, 1)
        await received.put(frame.apdu)
        writer.close()

    collector = await asyncio.start_server(on_push, "127.0.0.1", 0)
    port = collector.sockets[0].getsockname()[1]
    base = free_base_port(2)
    plain = await start_simulated_meters(2, base, push_to=("127.0.0.1", port), push_interval=0.5)
    try:
        apdus = [await asyncio.wait_for(received.get(), 5) for _ in range(2)]
    finally:
        await plain.close()
    for apdu in apdus:
        note = DataNotification.from_bytes(apdu)
        body = parse_as_dlms_data(note.body)
        assert len(body) == 6 and body[0] in (b"HESSIM0000000", b"HESSIM0000001")
        assert isinstance(body[2], int) and 2000 < body[4] < 2600  # Wh; 0.1 V
    ciphered = await start_simulated_meters(
        1, base, push_to=("127.0.0.1", port), push_interval=60, push_ciphered=True
    )
    try:
        while not received.empty():
            received.get_nowait()
        apdu = await asyncio.wait_for(received.get(), 5)
    finally:
        await ciphered.close()
        collector.close()
    assert apdu[0] == 0xDB and apdu[2:10] == simulated_keys("SIM0000000").system_title
    from dlms_cosem import security  # type: ignore[import-untyped]

    content = apdu[11:] if apdu[10] < 0x80 else apdu[10 + 1 + (apdu[10] & 0x7F) :]
    keys = simulated_keys("SIM0000000")
    plain_apdu = security.decrypt(
        security.SecurityControlField.from_bytes(content[:1]),
        system_title=keys.system_title,
        invocation_counter=int.from_bytes(content[1:5], "big"),
        key=keys.ek,
        cipher_text=content[5:],
        auth_key=keys.ak,
    )
    note = DataNotification.from_bytes(plain_apdu)
    assert parse_as_dlms_data(note.body)[0] == b"HESSIM0000000"


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


async def test_a_thousand_meters_in_one_process() -> None:
    base = free_base_port(1000)
    rss_before = _rss_mib()
    started = time.perf_counter()
    fleet = await start_simulated_meters(1000, base)
    startup = time.perf_counter() - started
    try:
        reads = []
        for index in (0, 499, 999):
            t0 = time.perf_counter()
            result = await asyncio.to_thread(
                _cosem_read, base + index, "wrapper", "none", fleet.serials[index]
            )
            reads.append(time.perf_counter() - t0)
            assert result["serial"] == f"SIM{index:07d}"
        print(
            f"1000 meters: startup {startup:.2f} s, RSS +{_rss_mib() - rss_before:.0f} MiB, "
            f"cold session (AARQ, 5 GETs, RLRQ) {max(reads) * 1000:.0f} ms"
        )
        assert startup < 30
    finally:
        await fleet.close()
