"""Running jobs on meters: one session per meter at a time, bounded fleet concurrency, the
meter's DLMS profile (client address, link sizes), keys and invocation counters, retries with
backoff, and per-meter communication statistics.

Invocation counters: the head-end's counter is persisted per meter and key version
(``counters.py``). Where the meter's profile names a counter object, it is read through the
public client before each HLS association and ours is kept above it; where it names none (or
the object cannot be read) the persisted counter is used alone. When a meter refuses an HLS
association in a way that may be our counter (not an authentication failure), the counter is
resynchronised once — to the least value the meter named, else above the counter object read
again, else a bounded step forward — recorded as an event, and the association tried again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from msgspec.structs import replace
from psycopg_pool import AsyncConnectionPool

from adapters.dlms.collection_store import CollectionStore
from adapters.dlms.cosem import DATA
from adapters.dlms.counters import PostgresCounterLedger
from adapters.dlms.key_vault import KeyCipher, KeyVaultError, load_keys
from adapters.dlms.session import (
    AssociationRefused,
    AttributeRef,
    CounterLedger,
    Credentials,
    DataAccessError,
    LinkError,
    LinkSizes,
    MeterSession,
    MeterTarget,
    MissingKeys,
    NotDialled,
    SessionError,
    SessionFactory,
)
from domain.dlms_profile import ModelProfile, ProfileCatalogue
from domain.meter_keys import MeterKeys
from domain.values import SecurityLevel

log = logging.getLogger(__name__)
T = TypeVar("T")
Job = Callable[[MeterSession], Awaitable[T]]
RecordResync = Callable[[UUID, int, str, int, int, str], Awaitable[None]]
"""(meter, key version, strategy, previous counter, next counter, reason) → recorded."""
COUNTER_OBJECT_RETRY_S = 3_600.0
"""How long a counter object that could not be read is not tried again for a meter."""


class _MeterLock:
    """A meter's session lock and how many jobs hold or wait for it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


async def _no_record(*_args: Any) -> None:
    return None


class MeterAccess:
    """The one way the head-end talks to meters."""

    def __init__(
        self,
        factory: SessionFactory,
        store: CollectionStore,
        pool: AsyncConnectionPool[Any],
        schema: str,
        cipher: KeyCipher,
        *,
        client_system_title: bytes,
        concurrency: int,
        retries: int,
        catalogue: ProfileCatalogue,
        record_resync: RecordResync = _no_record,
        backoff: float = 0.5,
    ) -> None:
        self.factory = factory
        self.store = store
        self.catalogue = catalogue
        self._pool = pool
        self._schema = schema
        self._cipher = cipher
        self._title = client_system_title
        self._fleet = asyncio.Semaphore(concurrency)
        self._locks: dict[UUID, _MeterLock] = {}
        self._retries = retries
        self._backoff = backoff
        self._record_resync = record_resync
        self._no_counter_object: dict[UUID, float] = {}

    # -- the meter's profile -------------------------------------------------------------

    def profile_of(self, target: MeterTarget) -> ModelProfile:
        """The DLMS profile the meter uses (assigned, matched by model, or the default)."""
        return self.catalogue.resolve(
            target.profile, target.manufacturer, target.model, target.firmware
        )

    def client_of(self, target: MeterTarget) -> int:
        """The client address of the meter's association: its own, else its profile's."""
        c = target.connection
        if c.client_address is not None:
            return c.client_address
        return self.profile_of(target).clients.for_level(c.security)

    def effective(self, target: MeterTarget) -> MeterTarget:
        """``target`` with its client address resolved."""
        if target.connection.client_address is not None:
            return target
        return replace(
            target, connection=replace(target.connection, client_address=self.client_of(target))
        )

    # -- running jobs --------------------------------------------------------------------

    async def run(self, target: MeterTarget, job: Job[T]) -> T:
        """Run ``job`` in a session with the meter; retry retryable failures with backoff.

        Every attempt counts in the meter's communication statistics; the last error is
        raised when no attempt succeeded.
        """
        if not target.connection.dialled:
            raise NotDialled(
                f"meter {target.serial} has transport NONE (push/HTTP/NATS ingest only): "
                "it is never dialled"
            )
        entry = self._locks.get(target.id)
        if entry is None:
            entry = self._locks[target.id] = _MeterLock()
        entry.users += 1
        try:
            async with entry.lock, self._fleet:
                return await self._attempts(self.effective(target), job)
        finally:
            # Dropped only when nobody holds or waits for it: a waiter keeps it alive.
            entry.users -= 1
            if entry.users == 0:
                del self._locks[target.id]

    async def _attempts(self, target: MeterTarget, job: Job[T]) -> T:
        delay = self._backoff
        for attempt in range(self._retries + 1):
            try:
                result = await self._once(target, job)
            except SessionError as exc:
                await self.store.record_attempt(target.id, datetime.now(UTC), exc.message)
                if not exc.retryable or attempt == self._retries:
                    raise
                log.info("meter %s: %s; retrying in %.1fs", target.serial, exc.message, delay)
                await asyncio.sleep(delay)
                delay *= 2
            except Exception as exc:
                await self.store.record_attempt(
                    target.id, datetime.now(UTC), f"internal error: {type(exc).__name__}"
                )
                raise
            else:
                await self.store.record_attempt(target.id, datetime.now(UTC), None)
                return result
        raise AssertionError("unreachable")

    async def _once(self, target: MeterTarget, job: Job[T]) -> T:
        profile = self.profile_of(target)
        credentials = await self._credentials(target, profile)
        try:
            session = await self.factory.open(target, credentials)
        except AssociationRefused as exc:
            if not exc.counter_suspect or credentials.counters is None:
                raise
            moved = await self._resync(target, profile, credentials.counters, exc)
            try:
                session = await self.factory.open(target, credentials)
            except AssociationRefused as again:
                raise AssociationRefused(
                    f"{again.message}; also after moving the invocation counter {moved}: "
                    "wrong keys, or a counter further ahead than the profile's resync step"
                ) from None
        try:
            return await job(session)
        finally:
            await session.close()

    # -- credentials and invocation counters ---------------------------------------------

    async def _credentials(self, target: MeterTarget, profile: ModelProfile) -> Credentials:
        link = LinkSizes(
            max_pdu=profile.link.max_pdu,
            hdlc_max_info=profile.link.hdlc_max_info,
            hdlc_window=profile.link.hdlc_window,
        )
        security = target.connection.security
        if security is SecurityLevel.NONE:
            return Credentials(link=link)
        try:
            keys = await load_keys(
                self._pool, self._schema, self._cipher, target.id, target.key_version
            )
        except KeyVaultError as exc:
            raise MissingKeys(f"meter {target.serial}: {exc}") from None
        if security is SecurityLevel.LLS:
            return Credentials(keys=keys, link=link)
        counters = PostgresCounterLedger(
            self._pool, self._schema, target.id, target.key_version, target.serial
        )
        if keys.ek is not None and keys.ak is not None:
            meter_counter = await self._meter_counter(target, profile)
            if meter_counter is not None:
                await counters.note_meter_counter(meter_counter)
                # Our next counter must exceed what the meter last accepted or used.
                await counters.reserve(0, meter_counter + 1)
        return Credentials(keys=keys, client_system_title=self._title, counters=counters, link=link)

    async def _meter_counter(self, target: MeterTarget, profile: ModelProfile) -> int | None:
        """The meter's counter object read by the public client; None without one."""
        obis = profile.invocation_counter.obis_for(self.client_of(target))
        if obis is None:
            return None
        failed_at = self._no_counter_object.get(target.id)
        if failed_at is not None and time.monotonic() - failed_at < COUNTER_OBJECT_RETRY_S:
            return None
        try:
            return await self.read_counter_object(target, profile, obis)
        except (DataAccessError, AssociationRefused) as exc:
            self._no_counter_object[target.id] = time.monotonic()
            log.warning(
                "meter %s: invocation counter object %s cannot be read (%s); using the "
                "head-end's persisted counter",
                target.serial,
                obis,
                exc.message,
            )
            return None

    async def read_counter_object(
        self, target: MeterTarget, profile: ModelProfile, obis: str
    ) -> int:
        """GET ``obis`` (class 1, attribute 2) as the profile's counter-reading client."""
        public = replace(
            target,
            connection=replace(
                target.connection,
                client_address=profile.invocation_counter.read_by,
                security=SecurityLevel.NONE,
            ),
        )
        credentials = Credentials(keys=MeterKeys(), link=LinkSizes(max_pdu=profile.link.max_pdu))
        session = await self.factory.open(public, credentials)
        try:
            value = await session.get(AttributeRef(DATA, obis, 2))
        finally:
            await session.close()
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise LinkError(
                f"meter {target.serial}: invocation counter {obis} is not an unsigned integer"
            )
        return value

    async def _resync(
        self,
        target: MeterTarget,
        profile: ModelProfile,
        counters: CounterLedger,
        refusal: AssociationRefused,
    ) -> str:
        """Move our counter on after a refusal that may be the counter; say how."""
        previous = await counters.reserve(0, 0)
        obis = profile.invocation_counter.obis_for(self.client_of(target))
        strategy, floor = "step", previous + profile.invocation_counter.resync_step
        if refusal.counter_hint is not None and refusal.counter_hint > previous:
            strategy, floor = "meter-hint", refusal.counter_hint
        elif obis is not None:
            try:
                value = await self.read_counter_object(target, profile, obis)
            except (DataAccessError, AssociationRefused) as exc:
                log.info("meter %s: counter object %s: %s", target.serial, obis, exc.message)
            else:
                if value + 1 > previous:
                    strategy, floor = "object", value + 1
        await counters.reserve(0, floor)
        reason = f"{refusal.message} (counter {previous} refused; {strategy} → {floor})"
        log.warning("meter %s: invocation counter resynchronised: %s", target.serial, reason)
        await self._record_resync(
            target.id, target.key_version, strategy, previous, floor, refusal.message
        )
        return f"from {previous} to {floor} ({strategy})"
