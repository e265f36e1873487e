"""The DLMS push listener: a TCP server taking wrapper-framed DATA-NOTIFICATIONs from meters.

Each notification is identified (system title of a general-glo-ciphered one, else the logical
device name in its body), deciphered and checked (the meter's invocation counter must grow),
decoded into readings and published to READINGS in batches. A push that is unknown, malformed,
unprotected from an HLS meter, a replay, or undecipherable is rejected: counted in
``hes_dlms_pushes_total`` and dead-lettered with its reason and bytes. Nothing a peer sends can
stop the listener: a broken wrapper stream closes that one connection.

Body layout (the meters' push setup object list, one for the fleet): logical device name,
clock, then the raw values of the registers of the ``PushLayout`` (``HES_DLMS_PUSH_LAYOUT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from adapters.dlms import axdr
from adapters.dlms.cipher import GENERAL_GLO_CIPHERING, CipherError, Keys, decipher_apdu
from adapters.dlms.cosem import ScalingError
from adapters.dlms.cosem_time import CosemTimeError, decode_datetime, encode_datetime
from adapters.dlms.key_vault import KeyCipher, KeyVaultError, load_many_keys
from adapters.dlms.link import WRAPPER_HEADER
from adapters.dlms.push_layout import DEFAULT_PUSH_LAYOUT, PushLayout
from adapters.dlms.reading_outlet import ReadingOutlet
from adapters.dlms.session import MeterTarget
from adapters.metrics import DLMS_PUSHES
from domain.meter_keys import MeterKeys
from domain.readings import Reading, Source
from domain.values import MeterStatus, SecurityLevel

log = logging.getLogger(__name__)

DATA_NOTIFICATION = 0x0F
MAX_APDU = 4096
_BATCH_POLL_S = 0.002
_READ_CHUNK = 65536
DIRECTORY_TTL_S = 60.0
UNKNOWN_TTL_S = 10.0
LDN_PREFIX_LEN = 3
"""A logical device name is the 3-letter manufacturer id followed by the serial number."""


class PushDeadLetters(Protocol):
    """Where rejected pushes go (JetStream ``HES_DEADLETTER``)."""

    async def reject(self, rejections: Sequence[PushRejection]) -> None:
        """Record every rejection durably, or raise."""
        ...


class PushRejected(Exception):
    """One notification cannot be accepted; ``rule`` names why (metric label and dead letter)."""

    def __init__(self, rule: str, message: str, serial: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.serial = serial


class PushRejection(msgspec.Struct, frozen=True, kw_only=True):
    """A rejected push as recorded on the dead-letter stream."""

    source: str = "dlms_push"
    received_at: datetime
    peer: str
    rule: str
    message: str
    serial: str | None
    data: bytes
    """The frame's APDU as received (base64 in the JSON)."""


@dataclass(frozen=True, slots=True)
class Received:
    """One wrapper frame's APDU, where it came from and when; or a broken frame's bytes."""

    peer: str
    apdu: bytes
    at: datetime
    broken: str | None = None
    """Why the framing failed (the connection was closed); ``None`` for a whole frame."""


@dataclass
class _Known:
    target: MeterTarget | None
    keys: Keys | None
    fetched: float


class PushDirectory:
    """Meters by system title and by serial, with their suite-0 keys; cached briefly."""

    def __init__(self, pool: AsyncConnectionPool[Any], schema: str, cipher: KeyCipher) -> None:
        self._pool = pool
        self._schema = schema
        self._ident = sql.Identifier(schema)
        self._cipher = cipher
        self._by_title: dict[bytes, _Known] = {}
        self._by_serial: dict[str, _Known] = {}
        self._last_ic: dict[tuple[UUID, int], int] = {}
        self._dirty: dict[tuple[UUID, int], int] = {}

    def _fresh(self, known: _Known | None) -> bool:
        if known is None:
            return False
        ttl = DIRECTORY_TTL_S if known.target is not None else UNKNOWN_TTL_S
        return time.monotonic() - known.fetched < ttl

    async def resolve(self, titles: set[bytes], serials: set[str]) -> None:
        """Load the meters behind these titles and serials that are not cached."""
        titles = {t for t in titles if not self._fresh(self._by_title.get(t))}
        serials = {s for s in serials if not self._fresh(self._by_serial.get(s))}
        if not titles and not serials:
            return
        query = sql.SQL(
            "SELECT m.id, m.serial, m.region, m.area, m.status, m.phases, m.connection, "
            "COALESCE(d.key_version, 0) AS key_version, t.system_title FROM {s}.meters m "
            "LEFT JOIN {s}.dlms_meter_state d ON d.meter_id = m.id "
            "LEFT JOIN {s}.dlms_system_titles t ON t.meter_id = m.id "
            "WHERE t.system_title = ANY(%s) OR upper(m.serial) = ANY(%s)"
        ).format(s=self._ident)
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, (list(titles), [s.upper() for s in serials]))
            rows = await cur.fetchall()
        now = time.monotonic()
        for title in titles:
            self._by_title[title] = _Known(None, None, now)
        for serial in serials:
            self._by_serial[serial.upper()] = _Known(None, None, now)
        found: list[tuple[bytes | None, MeterTarget]] = []
        for row in rows:
            raw_title = row.pop("system_title")
            target = msgspec.convert(row, MeterTarget, strict=False)
            found.append((None if raw_title is None else bytes(raw_title), target))
        opened = await load_many_keys(
            self._pool, self._schema, self._cipher, [(t.id, t.key_version) for _, t in found]
        )
        for found_title, target in found:
            known = _Known(
                target, self._keys(target, opened.get((target.id, target.key_version))), now
            )
            self._by_serial[target.serial.upper()] = known
            if found_title is not None:
                self._by_title[found_title] = known

    @staticmethod
    def _keys(target: MeterTarget, opened: MeterKeys | KeyVaultError | None) -> Keys | None:
        if isinstance(opened, KeyVaultError):
            log.error("stored keys of meter %s cannot be opened", target.serial)
            return None
        if opened is None or opened.ek is None or opened.ak is None:
            return None
        return Keys(opened.ek, opened.ak)

    def by_title(self, title: bytes) -> _Known | None:
        """The cached entry of a system title (after ``resolve``)."""
        return self._by_title.get(title)

    def by_serial(self, serial: str) -> _Known | None:
        """The cached entry of a serial number (after ``resolve``)."""
        return self._by_serial.get(serial.upper())

    async def last_counters(self, keys: set[tuple[UUID, int]]) -> None:
        """Load the meters' last accepted invocation counters that are not cached."""
        missing = [k for k in keys if k not in self._last_ic]
        if not missing:
            return
        query = sql.SQL(
            "SELECT meter_id, key_version, server_last FROM {s}.dlms_invocation_counters "
            "WHERE (meter_id, key_version) IN (SELECT * FROM unnest(%s::uuid[], %s::int[]))"
        ).format(s=self._ident)
        async with self._pool.connection() as conn:
            rows = await (
                await conn.execute(query, ([m for m, _ in missing], [v for _, v in missing]))
            ).fetchall()
        for key in missing:
            self._last_ic[key] = -1
        for meter, version, last in rows:
            self._last_ic[(meter, version)] = int(last)

    def accept_counter(self, key: tuple[UUID, int], ic: int) -> bool:
        """True (and remembered) when ``ic`` is above every counter accepted before."""
        if ic <= self._last_ic.get(key, -1):
            return False
        self._last_ic[key] = ic
        self._dirty[key] = ic
        return True

    async def persist_counters(self) -> None:
        """Write the accepted counters (never lowering a stored one)."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        query = sql.SQL(
            "INSERT INTO {s}.dlms_invocation_counters AS c (meter_id, key_version, client_next, "
            "server_last) SELECT m, v, 0, ic FROM unnest(%s::uuid[], %s::int[], %s::bigint[]) "
            "AS u(m, v, ic) ON CONFLICT (meter_id, key_version) DO UPDATE "
            "SET server_last = GREATEST(c.server_last, EXCLUDED.server_last), updated_at = now()"
        ).format(s=self._ident)
        pairs = sorted(dirty.items())  # one lock order for concurrent writers
        async with self._pool.connection() as conn:
            await conn.execute(
                query,
                ([m for (m, _), _ in pairs], [v for (_, v), _ in pairs], [ic for _, ic in pairs]),
            )


@dataclass
class _Decoded:
    target: MeterTarget
    readings: list[Reading]


@dataclass
class _Prepared:
    decoded: list[_Decoded]
    rejections: list[PushRejection]


class PushListener:
    """Accepts pushes on ``host:port`` and hands them, in batches, to the reading pipeline."""

    def __init__(
        self,
        outlet: ReadingOutlet,
        dead_letters: PushDeadLetters,
        directory: PushDirectory,
        host: str,
        port: int,
        *,
        max_batch: int = 1024,
        max_delay: float = 0.02,
        max_in_flight: int = 2,
        queue_size: int = 20_000,
        layout: PushLayout = DEFAULT_PUSH_LAYOUT,
    ) -> None:
        self.outlet = outlet
        self.dead_letters = dead_letters
        self.directory = directory
        self.host = host
        self.port = port
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_in_flight = max_in_flight
        self.layout = layout
        self._queue: asyncio.Queue[Received] = asyncio.Queue(queue_size)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.accepted = 0
        self.rejected = 0

    @property
    def bound_port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Start accepting connections."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, backlog=1024)
        log.info("DLMS push listener on %s:%d", self.host, self.bound_port)

    async def run(self, stop: asyncio.Event) -> None:
        """Start (unless started), process pushes until ``stop``, then close."""
        if self._server is None:
            await self.start()
        drain = asyncio.create_task(self._drain_forever())
        try:
            await stop.wait()
        finally:
            await self.close()
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
            await self.flush()

    async def close(self) -> None:
        """Stop accepting and drop open connections."""
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else "?"
        buffer = bytearray()
        try:
            while True:
                chunk = await reader.read(_READ_CHUNK)
                if not chunk:
                    if buffer:
                        await self._reject_now(peer, bytes(buffer), _truncation(buffer))
                    return
                buffer += chunk
                at = datetime.now(UTC)
                pos = 0
                while len(buffer) - pos >= WRAPPER_HEADER.size:
                    version, _source, _destination, length = WRAPPER_HEADER.unpack_from(buffer, pos)
                    if version != 1 or not 0 < length <= MAX_APDU:
                        await self._reject_now(
                            peer,
                            bytes(buffer[pos : pos + WRAPPER_HEADER.size]),
                            f"wrapper header: version {version}, length {length} (max {MAX_APDU})",
                        )
                        return  # the stream cannot be resynchronised
                    end = pos + WRAPPER_HEADER.size + length
                    if end > len(buffer):
                        break
                    received = Received(peer, bytes(buffer[pos + WRAPPER_HEADER.size : end]), at)
                    if self._queue.full():
                        await self._queue.put(received)  # back-pressure on this meter's socket
                    else:
                        self._queue.put_nowait(received)
                    pos = end
                del buffer[:pos]
        except (OSError, asyncio.CancelledError):
            return
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _reject_now(self, peer: str, data: bytes, message: str) -> None:
        await self._queue.put(Received(peer, data[:MAX_APDU], datetime.now(UTC), message))

    async def _drain_forever(self) -> None:
        # Decoding and the counter check run one batch at a time, in arrival order (a meter's
        # counters must be seen in order); publishing overlaps with decoding the next batch.
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                batch = await self._next_batch()
                try:
                    prepared = await self._prepare(batch)
                except Exception:
                    log.exception("DLMS push batch of %d could not be decoded", len(batch))
                    continue
                while len(in_flight) >= self.max_in_flight:
                    _, in_flight = await asyncio.wait(
                        in_flight, return_when=asyncio.FIRST_COMPLETED
                    )
                in_flight.add(asyncio.create_task(self._deliver_logged(prepared)))
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _next_batch(self) -> list[Received]:
        """Wait for one push, then take what arrives within ``max_delay`` (up to ``max_batch``)."""
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_delay
        while True:
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            remaining = deadline - time.monotonic()
            if len(batch) >= self.max_batch or remaining <= 0:
                return batch
            await asyncio.sleep(min(remaining, _BATCH_POLL_S))

    async def _deliver_logged(self, prepared: _Prepared) -> None:
        try:
            await self._deliver(prepared)
        except Exception:
            log.exception(
                "DLMS push batch of %d failed; its readings were not published",
                len(prepared.decoded),
            )

    async def flush(self) -> None:
        """Process whatever is queued now."""
        batch: list[Received] = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        await self.process(batch)

    async def process(self, batch: Sequence[Received]) -> tuple[int, int]:
        """Decode, publish and dead-letter one batch; return (accepted, rejected) pushes."""
        prepared = await self._prepare(batch)
        await self._deliver(prepared)
        return len(prepared.decoded), len(prepared.rejections)

    async def _prepare(self, batch: Sequence[Received]) -> _Prepared:
        """Decode and check one batch: the readings to publish and the rejections."""
        rejections = [
            PushRejection(
                received_at=r.at,
                peer=r.peer,
                rule="malformed",
                message=r.broken,
                serial=None,
                data=r.apdu,
            )
            for r in batch
            if r.broken is not None
        ]
        items = [r for r in batch if r.broken is None]
        titles: set[bytes] = set()
        serials: set[str] = set()
        plain: list[_Plain | PushRejected | None] = []
        for item in items:
            title = _title_of(item.apdu)
            parsed: _Plain | PushRejected | None = None
            if title is not None:
                titles.add(title)
            elif item.apdu[:1] == _NOTIFICATION_TAG:
                try:
                    parsed = _notification(item.apdu, self.layout)
                except PushRejected as exc:
                    parsed = exc
                else:
                    if parsed[0] is not None:
                        serials.update(_serials_of(parsed[0]))
            plain.append(parsed)
        if titles or serials:
            await self.directory.resolve(titles, serials)
        decoded: list[_Decoded] = []
        counter_keys: list[tuple[Received, MeterTarget, int, int] | None] = []
        for item, parsed in zip(items, plain, strict=True):
            try:
                result, ic = self._decode(item, parsed)
            except PushRejected as exc:
                rejections.append(
                    PushRejection(
                        received_at=item.at,
                        peer=item.peer,
                        rule=exc.rule,
                        message=exc.message,
                        serial=exc.serial,
                        data=item.apdu,
                    )
                )
                continue
            decoded.append(result)
            counter_keys.append(None if ic is None else (item, result.target, ic, len(decoded) - 1))
        checks = [c for c in counter_keys if c is not None]
        if checks:
            await self.directory.last_counters({(t.id, t.key_version) for _, t, _, _ in checks})
            replayed: set[int] = set()
            for item, target, ic, index in sorted(checks, key=lambda c: c[2]):
                if not self.directory.accept_counter((target.id, target.key_version), ic):
                    replayed.add(index)
                    rejections.append(
                        PushRejection(
                            received_at=item.at,
                            peer=item.peer,
                            rule="replay",
                            message=f"meter {target.serial} push invocation counter {ic} "
                            "is not above one accepted before: possible replay",
                            serial=target.serial,
                            data=item.apdu,
                        )
                    )
            decoded = [d for i, d in enumerate(decoded) if i not in replayed]
        return _Prepared(decoded, rejections)

    async def _deliver(self, prepared: _Prepared) -> None:
        """Publish the readings, persist the counters, dead-letter the rejections, count."""
        decoded, rejections = prepared.decoded, prepared.rejections
        if decoded:
            await self.outlet.publish_many(
                [(d.target, d.readings) for d in decoded], Source.DLMS_PUSH
            )
            await self.directory.persist_counters()
        if rejections:
            await self.dead_letters.reject(rejections)
        DLMS_PUSHES.labels("accepted").inc(len(decoded))
        for rejection in rejections:
            DLMS_PUSHES.labels(rejection.rule).inc()
        self.accepted += len(decoded)
        self.rejected += len(rejections)

    def _decode(
        self, item: Received, parsed: _Plain | PushRejected | None
    ) -> tuple[_Decoded, int | None]:
        apdu = item.apdu
        ic: int | None = None
        title = _title_of(apdu)
        if title is not None:
            known = self.directory.by_title(title)
            if known is None or known.target is None:
                raise PushRejected(
                    "unknown-meter", f"no meter has system title {title.hex().upper()}"
                )
            target = known.target
            if known.keys is None:
                raise PushRejected(
                    "no-keys",
                    f"meter {target.serial} sent a ciphered push but has no EK/AK",
                    target.serial,
                )
            try:
                deciphered = decipher_apdu(apdu, keys=known.keys, peer_system_title=title)
            except CipherError as exc:
                raise PushRejected(
                    "decipher", f"meter {target.serial}: {exc}", target.serial
                ) from None
            apdu, ic = deciphered.apdu, deciphered.invocation_counter
            name, at, values = _notification(apdu, self.layout)
            if name is not None and target.serial.upper() not in _serials_of(name):
                raise PushRejected(
                    "identity",
                    f"push ciphered with meter {target.serial}'s title names device {name!r}",
                    target.serial,
                )
        elif apdu[:1] == _NOTIFICATION_TAG:
            if isinstance(parsed, PushRejected):
                raise parsed
            name, at, values = parsed if parsed is not None else _notification(apdu, self.layout)
            if name is None:
                raise PushRejected("unknown-meter", "plain push without a logical device name")
            known = next(
                (k for s in _serials_of(name) if (k := self.directory.by_serial(s)) and k.target),
                None,
            )
            if known is None or known.target is None:
                raise PushRejected("unknown-meter", f"no meter has logical device name {name!r}")
            target = known.target
            if target.connection.security is SecurityLevel.HLS_GMAC:
                raise PushRejected(
                    "unprotected",
                    f"meter {target.serial} uses HLS-GMAC but pushed in the clear",
                    target.serial,
                )
        else:
            raise PushRejected("malformed", f"APDU tag 0x{apdu[0]:02X} is not a data-notification")
        if target.status == MeterStatus.DECOMMISSIONED:
            raise PushRejected(
                "decommissioned", f"meter {target.serial} is decommissioned", target.serial
            )
        try:
            readings = [
                Reading(scaling.quantity.id, at, scaling.apply(raw))
                for scaling, raw in zip(self.layout.scalings, values, strict=True)
            ]
        except (ScalingError, ValueError) as exc:
            raise PushRejected(
                "malformed", f"meter {target.serial}: {exc}", target.serial
            ) from None
        return _Decoded(target, readings), ic


def encode_notification(
    logical_device_name: str,
    at: datetime,
    raw_values: Sequence[int],
    invoke_id: int = 1,
    layout: PushLayout = DEFAULT_PUSH_LAYOUT,
) -> bytes:
    """A plain DATA-NOTIFICATION APDU in ``layout`` (for load tests and test meters)."""
    if len(raw_values) != len(layout):
        raise ValueError(f"the push layout has {len(layout)} values")
    body = axdr.structure(
        [
            axdr.octets(logical_device_name.encode("ascii")),
            axdr.octets(encode_datetime(at)),
            *(axdr.u32(v) for v in raw_values),
        ]
    )
    return (
        bytes((DATA_NOTIFICATION,))
        + (invoke_id & 0x00FF_FFFF).to_bytes(4, "big")
        + bytes((0,))
        + axdr.encode(body)
    )


def _truncation(rest: bytearray) -> str:
    """Why the bytes left when a connection closed are not a whole wrapper frame."""
    if len(rest) < WRAPPER_HEADER.size:
        return "truncated wrapper header"
    length = WRAPPER_HEADER.unpack_from(rest)[3]
    return f"truncated APDU: {len(rest) - WRAPPER_HEADER.size} of {length} bytes"


def _title_of(apdu: bytes) -> bytes | None:
    """The sender's system title of a general-glo-ciphered APDU (None for other APDUs)."""
    if len(apdu) < 10 or apdu[0] != GENERAL_GLO_CIPHERING or apdu[1] != 8:
        return None
    return bytes(apdu[2:10])


def _serials_of(name: str) -> list[str]:
    """Serials a logical device name may stand for: without the manufacturer id, or whole."""
    upper = name.strip().upper()
    return [upper[LDN_PREFIX_LEN:], upper] if len(upper) > LDN_PREFIX_LEN else [upper]


_NOTIFICATION_TAG = bytes((DATA_NOTIFICATION,))
_Plain = tuple[str | None, datetime, list[object]]
_FAST_INTS: dict[int, struct.Struct] = {
    5: struct.Struct(">i"),
    6: struct.Struct(">I"),
    15: struct.Struct(">b"),
    16: struct.Struct(">h"),
    17: struct.Struct(">B"),
    18: struct.Struct(">H"),
    20: struct.Struct(">q"),
    21: struct.Struct(">Q"),
}


def _fast_body(
    buf: bytes, pos: int, layout: PushLayout
) -> tuple[bytes, bytes, list[object]] | None:
    """The push layout decoded without the general A-XDR decoder (None: use that one).

    Handles exactly: structure of an octet string, an octet string and integers, with short
    lengths; anything else (or anything wrong) goes through ``axdr.decode_all``, which
    names the problem.
    """
    count = 2 + len(layout)
    if buf[pos : pos + 2] != bytes((2, count)):
        return None
    pos += 2
    strings = []
    for _ in range(2):
        if pos + 2 > len(buf) or buf[pos] != 9 or buf[pos + 1] >= 0x80:
            return None
        end = pos + 2 + buf[pos + 1]
        strings.append(buf[pos + 2 : end])
        pos = end
    values: list[object] = []
    for _ in layout.values:
        fmt = _FAST_INTS.get(buf[pos]) if pos < len(buf) else None
        if fmt is None or pos + 1 + fmt.size > len(buf):
            return None
        values.append(fmt.unpack_from(buf, pos + 1)[0])
        pos += 1 + fmt.size
    if pos != len(buf) or len(strings[1]) != 12:
        return None
    return strings[0], strings[1], values


def _notification(apdu: bytes, layout: PushLayout) -> _Plain:
    """(logical device name, clock, raw values) of a plain DATA-NOTIFICATION APDU."""
    try:
        if len(apdu) < 6 or apdu[0] != DATA_NOTIFICATION:
            raise PushRejected("malformed", "not a data-notification APDU")
        pos = 5  # tag + long-invoke-id-and-priority
        length, pos = axdr.decode_length(apdu, pos)
        stamp = apdu[pos : pos + length]
        if len(stamp) != length or length not in (0, 12):
            raise PushRejected("malformed", "data-notification date-time is not 0 or 12 octets")
        pos += length
        fast = _fast_body(apdu, pos, layout)
        if fast is not None:
            name_bytes, clock_bytes, raw = fast
            return name_bytes.decode("ascii", "replace"), decode_datetime(clock_bytes), raw
        body = axdr.decode_all(apdu[pos:])
        items = body.items()
        if len(items) != 2 + len(layout):
            raise PushRejected(
                "malformed",
                f"notification body has {len(items)} values, the push layout {2 + len(layout)}",
            )
        name_raw, clock = items[0].value, items[1].value
        if not isinstance(name_raw, bytes | str) or not isinstance(clock, bytes):
            raise PushRejected("malformed", "body must start with the device name and clock")
        name = name_raw.decode("ascii", "replace") if isinstance(name_raw, bytes) else name_raw
        at = decode_datetime(clock)
        return name, at, [i.value for i in items[2:]]
    except axdr.AxdrError as exc:
        raise PushRejected("malformed", f"notification body: {exc}") from None
    except CosemTimeError as exc:
        raise PushRejected("malformed", f"notification clock: {exc}") from None
