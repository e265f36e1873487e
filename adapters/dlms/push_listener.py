"""The DLMS push listener: a TCP server taking wrapper-framed DATA-NOTIFICATIONs from meters.

Each notification is identified (system title of a general-glo-ciphered one, else the logical
device name in its body), deciphered and checked (the meter's invocation counter must grow),
decoded into readings and published to READINGS in batches. A push that is unknown, malformed,
unprotected from an HLS meter, a replay, or undecipherable is rejected: counted in
``hes_dlms_pushes_total`` and dead-lettered with its reason and bytes. Nothing a peer sends can
stop the listener: a broken wrapper stream closes that one connection.

Body layout (the meter's push setup object list): logical device name, clock, then the raw
values of the registers of one of the meter model's ``PushLayout``s (its DLMS profile's, or
the fleet's ``HES_DLMS_PUSH_LAYOUT``); a layout with a push setup expects the body to start
with the setup's logical name. A model's layouts are told apart by that name or by the number
of values, and looked up once per meter (cached with the meter), never per push.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
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
from domain.dlms_profile import ProfileCatalogue
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
    layouts: tuple[PushLayout, ...] = ()
    """The push layouts of the meter's model (filled on its first push)."""


class PushLayouts:
    """Push layouts per model profile, built once per profile."""

    def __init__(
        self, catalogue: ProfileCatalogue | None, fleet: PushLayout = DEFAULT_PUSH_LAYOUT
    ) -> None:
        self._catalogue = catalogue
        self._fleet = (fleet,)
        self._by_profile: dict[str, tuple[PushLayout, ...]] = {}

    def with_fleet(self, fleet: PushLayout) -> PushLayouts:
        """The same catalogue with ``fleet`` as the layout of models that name none."""
        if self._fleet == (fleet,):
            return self
        return PushLayouts(self._catalogue, fleet)

    def of(self, target: MeterTarget) -> tuple[PushLayout, ...]:
        """The layouts a meter's pushes may have."""
        if self._catalogue is None:
            return self._fleet
        profile = self._catalogue.resolve(
            target.profile, target.manufacturer, target.model, target.firmware
        )
        layouts = self._by_profile.get(profile.name)
        if layouts is None:
            layouts = (
                tuple(PushLayout.of(spec) for spec in profile.push) if profile.push else self._fleet
            )
            self._by_profile[profile.name] = layouts
        return layouts


class PushDirectory:
    """Meters by system title and by serial, with their suite-0 keys; cached briefly."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        schema: str,
        cipher: KeyCipher,
        layouts: PushLayouts | None = None,
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._ident = sql.Identifier(schema)
        self._cipher = cipher
        self.layouts = layouts or PushLayouts(None)
        self._by_title: dict[bytes, _Known] = {}
        self._by_serial: dict[str, _Known] = {}
        self._last_ic: dict[tuple[UUID, int], int] = {}
        """The highest counter this listener accepted or saw claimed, per meter key."""

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
            "m.manufacturer, m.model, m.firmware, d.profile, "
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

    async def claim_counters(
        self, candidates: Sequence[tuple[tuple[UUID, int], int]]
    ) -> list[bool]:
        """Which ``(meter key, invocation counter)`` candidates are above every counter accepted
        before, by any listener: those are recorded, in one transaction, before anything else
        can see them. Candidates of one key must come in the order they were received."""
        accepted = [False] * len(candidates)
        fresh = [
            i for i, (key, ic) in enumerate(candidates) if ic > self._last_ic.get(key, -1)
        ]  # what this listener already saw is a replay without asking
        if not fresh:
            return accepted
        keys = sorted({candidates[i][0] for i in fresh})
        table = sql.Identifier(self._schema, "dlms_invocation_counters")
        async with self._pool.connection() as conn, conn.transaction():
            # Listeners side by side serialise on the counter rows (one lock order: sorted).
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {t} (meter_id, key_version, client_next, server_last) "
                    "SELECT m, v, 0, -1 FROM unnest(%s::uuid[], %s::int[]) AS u(m, v) "
                    "ORDER BY m, v ON CONFLICT (meter_id, key_version) DO NOTHING"
                ).format(t=table),
                ([m for m, _ in keys], [v for _, v in keys]),
            )
            cur = await conn.execute(
                sql.SQL(
                    "SELECT meter_id, key_version, server_last FROM {t} "
                    "WHERE (meter_id, key_version) IN "
                    "(SELECT * FROM unnest(%s::uuid[], %s::int[])) "
                    "ORDER BY meter_id, key_version FOR UPDATE"
                ).format(t=table),
                ([m for m, _ in keys], [v for _, v in keys]),
            )
            last = {(m, v): int(ic) for m, v, ic in await cur.fetchall()}
            for i in fresh:
                key, ic = candidates[i]
                if ic > last.get(key, -1):
                    last[key] = ic
                    accepted[i] = True
            await conn.execute(
                sql.SQL(
                    "UPDATE {t} AS c SET server_last = u.ic, updated_at = now() "
                    "FROM unnest(%s::uuid[], %s::int[], %s::bigint[]) AS u(m, v, ic) "
                    "WHERE c.meter_id = u.m AND c.key_version = u.v AND c.server_last < u.ic"
                ).format(t=table),
                ([m for m, _ in keys], [v for _, v in keys], [last[k] for k in keys]),
            )
        for key in keys:
            self._last_ic[key] = max(self._last_ic.get(key, -1), last[key])
        return accepted


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
        sock: socket.socket | None = None,
    ) -> None:
        self.outlet = outlet
        self._sock = sock
        """A socket already listening (bound by a supervising parent), used instead of host:port."""
        self.dead_letters = dead_letters
        self.directory = directory
        self.host = host
        self.port = port
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_in_flight = max_in_flight
        self.layout = layout
        directory.layouts = directory.layouts.with_fleet(layout)
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
        if self._sock is not None:
            self._server = await asyncio.start_server(self._serve, sock=self._sock, backlog=1024)
        else:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, backlog=1024
            )
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
        plain: list[_Body | PushRejected | None] = []
        for item in items:
            title = _title_of(item.apdu)
            parsed: _Body | PushRejected | None = None
            if title is not None:
                titles.add(title)
            elif item.apdu[:1] == _NOTIFICATION_TAG:
                try:
                    parsed = _notification(item.apdu)
                except PushRejected as exc:
                    parsed = exc
                else:
                    if parsed.name is not None:
                        serials.update(_serials_of(parsed.name))
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
        checks = sorted((c for c in counter_keys if c is not None), key=lambda c: c[2])
        if checks:
            claimed = await self.directory.claim_counters(
                [((t.id, t.key_version), ic) for _, t, ic, _ in checks]
            )
            replayed: set[int] = set()
            for (item, target, ic, index), fresh in zip(checks, claimed, strict=True):
                if not fresh:
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
        if rejections:
            await self.dead_letters.reject(rejections)
        DLMS_PUSHES.labels("accepted").inc(len(decoded))
        for rejection in rejections:
            DLMS_PUSHES.labels(rejection.rule).inc()
        self.accepted += len(decoded)
        self.rejected += len(rejections)

    def _decode(
        self, item: Received, parsed: _Body | PushRejected | None
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
            body = _notification(apdu)
            name = body.name
            if name is not None and target.serial.upper() not in _serials_of(name):
                raise PushRejected(
                    "identity",
                    f"push ciphered with meter {target.serial}'s title names device {name!r}",
                    target.serial,
                )
        elif apdu[:1] == _NOTIFICATION_TAG:
            if isinstance(parsed, PushRejected):
                raise parsed
            body = parsed if parsed is not None else _notification(apdu)
            name = body.name
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
        if not known.layouts:
            known.layouts = self.directory.layouts.of(target)
        layout = _layout_of(body, known.layouts)
        if layout is None:
            raise PushRejected(
                "malformed",
                f"meter {target.serial}: a body of {len(body.values)} values"
                f"{' from push setup ' + _ln(body.setup) if body.setup else ''} matches none of "
                "its model's push layouts",
                target.serial,
            )
        try:
            readings = [
                Reading(scaling.quantity.id, body.at, scaling.apply(raw))
                for scaling, raw in zip(layout.scalings, body.values, strict=True)
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
    head = [] if layout.setup is None else [axdr.octets(layout.setup)]
    body = axdr.structure(
        [
            *head,
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
_OCTET_STRING = 9
_LN_LEN = 6
_CLOCK_LEN = 12


@dataclass(frozen=True, slots=True)
class _Body:
    """A data-notification body: push setup (when first), device name, clock, raw values."""

    setup: bytes | None
    name: str | None
    at: datetime
    values: list[object]


def _ln(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def _layout_of(body: _Body, layouts: tuple[PushLayout, ...]) -> PushLayout | None:
    """The layout of ``body`` among a model's: by push setup, else by number of values."""
    for layout in layouts:
        if layout.setup == body.setup and len(layout) == len(body.values):
            return layout
    return None


def _fast_items(buf: bytes, pos: int) -> list[object] | None:
    """The body's items without the general A-XDR decoder (None: use that one).

    Handles exactly: a structure of short octet strings and integers; anything else (or
    anything wrong) goes through ``axdr.decode_all``, which names the problem.
    """
    if pos + 2 > len(buf) or buf[pos] != 2 or buf[pos + 1] >= 0x80:
        return None
    count = buf[pos + 1]
    pos += 2
    items: list[object] = []
    for _ in range(count):
        if pos >= len(buf):
            return None
        tag = buf[pos]
        if tag == _OCTET_STRING:
            if pos + 2 > len(buf) or buf[pos + 1] >= 0x80:
                return None
            end = pos + 2 + buf[pos + 1]
            if end > len(buf):
                return None
            items.append(buf[pos + 2 : end])
            pos = end
            continue
        fmt = _FAST_INTS.get(tag)
        if fmt is None or pos + 1 + fmt.size > len(buf):
            return None
        items.append(fmt.unpack_from(buf, pos + 1)[0])
        pos += 1 + fmt.size
    return items if pos == len(buf) else None


_clock_of = functools.lru_cache(maxsize=4096)(decode_datetime)
"""Pushes of a fleet carry the same few clock values: each is decoded once."""


def _split(items: list[object]) -> _Body:
    """Push setup (when the body starts with one), device name, clock and values."""
    first = items[0] if items else None
    start = 0
    if (
        isinstance(first, bytes)
        and len(first) == _LN_LEN
        and len(items) >= 3
        and isinstance(items[2], bytes)
        and len(items[2]) == _CLOCK_LEN
    ):
        start = 1
    if len(items) < start + 2:
        raise PushRejected("malformed", "notification body has fewer than 2 values")
    name_raw, clock = items[start], items[start + 1]
    if not isinstance(name_raw, bytes | str) or not isinstance(clock, bytes):
        raise PushRejected("malformed", "body must start with the device name and clock")
    name = name_raw.decode("ascii", "replace") if isinstance(name_raw, bytes) else name_raw
    setup = first if start and isinstance(first, bytes) else None
    return _Body(setup, name, _clock_of(clock), items[start + 2 :])


def _notification(apdu: bytes) -> _Body:
    """The body of a plain DATA-NOTIFICATION APDU."""
    try:
        if len(apdu) < 6 or apdu[0] != DATA_NOTIFICATION:
            raise PushRejected("malformed", "not a data-notification APDU")
        pos = 5  # tag + long-invoke-id-and-priority
        length, pos = axdr.decode_length(apdu, pos)
        stamp = apdu[pos : pos + length]
        if len(stamp) != length or length not in (0, _CLOCK_LEN):
            raise PushRejected("malformed", "data-notification date-time is not 0 or 12 octets")
        pos += length
        items = _fast_items(apdu, pos)
        if items is None:
            items = [i.value for i in axdr.decode_all(apdu[pos:]).items()]
        return _split(items)
    except axdr.AxdrError as exc:
        raise PushRejected("malformed", f"notification body: {exc}") from None
    except CosemTimeError as exc:
        raise PushRejected("malformed", f"notification clock: {exc}") from None
