"""The head-end's HDLC and wrapper framing and gurux's parsing, fed replies with repeated or odd
header bytes by scripted meters on loopback: what is whole is read, anything malformed fails
the session (and so the command) with a message naming the meter; nothing passes as success."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import pytest

from adapters.dlms import hdlc
from adapters.dlms.gurux_session import GuruxSession
from adapters.dlms.hdlc import Control, Kind, LinkParameters
from adapters.dlms.link import Link
from adapters.dlms.session import (
    AssociationRefused,
    Credentials,
    LinkError,
    MeterTarget,
    SessionError,
)
from domain.values import ConnectionProfile, Transport

pytestmark = pytest.mark.integration
CLIENT, SERVER = hdlc.encode_address(16), hdlc.encode_address(1, 17)


def _link(data: bytes, *, hdlc_link: bool) -> Link:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return Link(reader, cast(asyncio.StreamWriter, None), 1.0, hdlc_link, "127.0.0.1:1")


def _frame(kind: Kind, info: bytes = b"") -> bytes:
    return hdlc.encode_frame(CLIENT, SERVER, Control(kind, True), info)


async def test_hdlc_frames_after_repeated_and_shared_flags_are_read_whole() -> None:
    ua, rr = _frame(Kind.UA, LinkParameters().encode()), _frame(Kind.RR)
    # Extra opening flags, and two frames sharing one flag between them.
    link = _link(b"\x7e\x7e\x7e" + ua + rr[1:], hdlc_link=True)
    assert await link.receive() == ua
    assert await link.receive() == rr


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x7e\x10\x05\x03\x21\x73\x7e", "not HDLC type 3"),
        (b"\x7e\xa0\x02\x00\x00\x7e", "frame length of 2"),
        (_frame(Kind.UA)[:-1] + b"\x00", "without its closing flag"),
        (_frame(Kind.UA)[:-4], "closed the connection mid-frame"),
    ],
)
async def test_odd_hdlc_bytes_break_the_link_naming_the_peer(data: bytes, message: str) -> None:
    with pytest.raises(LinkError, match=message) as raised:
        await _link(data, hdlc_link=True).receive()
    assert "127.0.0.1:1" in raised.value.message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x02\x00\x01\x00\x10\x00\x01\xc4", "version 2"),
        (b"\x00\x01\x00\x01\x00\x10\x00\x00", "version 1"),  # zero length
        (b"\x00\x01\x00\x01\x00\x10\x00\x09\xc4\x01", "mid-frame"),
    ],
)
async def test_odd_wrapper_headers_break_the_link(data: bytes, message: str) -> None:
    with pytest.raises(LinkError, match=message):
        await _link(data, hdlc_link=False).receive()


Script = Callable[[hdlc.Frame], bytes]


@pytest.fixture
async def meter() -> AsyncIterator[Callable[[Script], Awaitable[int]]]:
    """A scripted HDLC meter on loopback: answers the SNRM as told, then a junk AARE."""
    servers: list[asyncio.Server] = []

    async def start(answer_snrm: Script) -> int:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                snrm = hdlc.decode_frame(await hdlc.read_frame(reader))
                writer.write(answer_snrm(snrm))
                await writer.drain()
                aarq = hdlc.decode_frame(await hdlc.read_frame(reader))
                junk = hdlc.LLC_RESPONSE + b"\x61\x03\xa1\x01\x00"
                writer.write(
                    hdlc.encode_frame(
                        aarq.source.raw, aarq.destination.raw, Control(Kind.I, True, 0, 1), junk
                    )
                )
                await writer.drain()
                await reader.read()
            except (asyncio.IncompleteReadError, ConnectionError, hdlc.HdlcError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _open(port: int) -> GuruxSession:
    target = MeterTarget(
        id=uuid.uuid4(),
        serial="ODD0001",
        region="r",
        area="a",
        status="REGISTERED",
        connection=ConnectionProfile(
            host="127.0.0.1",
            port=port,
            transport=Transport.HDLC,
            client_address=16,
            physical_address=17,
        ),
    )
    return await GuruxSession.open(target, Credentials(), 2.0)


def _ua(frame: hdlc.Frame) -> bytes:
    return hdlc.encode_frame(
        frame.source.raw, frame.destination.raw, Control(Kind.UA, True), LinkParameters().encode()
    )


async def test_a_ua_after_repeated_flags_is_accepted_and_a_junk_aare_refused(
    meter: Callable[[Script], Awaitable[int]],
) -> None:
    port = await meter(lambda f: b"\x7e\x7e\x7e" + _ua(f))
    with pytest.raises(AssociationRefused, match=r"meter ODD0001 .*malformed AARE"):
        await _open(port)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda f: _ua(f)[:-3] + bytes((_ua(f)[-3] ^ 0xFF,)) + _ua(f)[-2:], "Wrong CRC"),
        (
            lambda f: hdlc.encode_frame(f.source.raw, f.destination.raw, Control(Kind.DM, True)),
            "DM \\(disconnected mode\\)",
        ),
    ],
)
async def test_a_malformed_or_refusing_reply_fails_the_session(
    meter: Callable[[Script], Awaitable[int]], answer: Script, message: str
) -> None:
    port = await meter(answer)
    with pytest.raises(SessionError, match=message) as raised:
        await _open(port)
    assert "meter ODD0001" in raised.value.message
