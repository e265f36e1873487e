"""Running jobs on meters: one session per meter at a time, bounded fleet concurrency, keys
and invocation counters, retries with backoff, and per-meter communication statistics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from msgspec.structs import replace
from psycopg_pool import AsyncConnectionPool

from adapters.dlms.collection_store import CollectionStore
from adapters.dlms.cosem import DATA, INVOCATION_COUNTER
from adapters.dlms.counters import PostgresCounterLedger
from adapters.dlms.key_vault import KeyCipher, KeyVaultError, load_keys
from adapters.dlms.session import (
    AttributeRef,
    Credentials,
    LinkError,
    MeterSession,
    MeterTarget,
    MissingKeys,
    SessionError,
    SessionFactory,
)
from domain.meter_keys import MeterKeys
from domain.values import SecurityLevel

log = logging.getLogger(__name__)
T = TypeVar("T")
Job = Callable[[MeterSession], Awaitable[T]]


class _MeterLock:
    """A meter's session lock and how many jobs hold or wait for it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


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
        backoff: float = 0.5,
    ) -> None:
        self.factory = factory
        self.store = store
        self._pool = pool
        self._schema = schema
        self._cipher = cipher
        self._title = client_system_title
        self._fleet = asyncio.Semaphore(concurrency)
        self._locks: dict[UUID, _MeterLock] = {}
        self._retries = retries
        self._backoff = backoff

    async def run(self, target: MeterTarget, job: Job[T]) -> T:
        """Run ``job`` in a session with the meter; retry retryable failures with backoff.

        Every attempt counts in the meter's communication statistics; the last error is
        raised when no attempt succeeded.
        """
        entry = self._locks.get(target.id)
        if entry is None:
            entry = self._locks[target.id] = _MeterLock()
        entry.users += 1
        try:
            async with entry.lock, self._fleet:
                return await self._attempts(target, job)
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
        credentials = await self._credentials(target)
        session = await self.factory.open(target, credentials)
        try:
            return await job(session)
        finally:
            await session.close()

    async def _credentials(self, target: MeterTarget) -> Credentials:
        security = target.connection.security
        if security is SecurityLevel.NONE:
            return Credentials()
        try:
            keys = await load_keys(
                self._pool, self._schema, self._cipher, target.id, target.key_version
            )
        except KeyVaultError as exc:
            raise MissingKeys(f"meter {target.serial}: {exc}") from None
        if security is SecurityLevel.LLS:
            return Credentials(keys=keys)
        counters = PostgresCounterLedger(
            self._pool, self._schema, target.id, target.key_version, target.serial
        )
        if keys.ek is not None and keys.ak is not None:
            meter_counter = await self._meter_counter(target)
            await counters.note_meter_counter(meter_counter)
            # Our next counter must exceed what the meter last accepted or used.
            await counters.reserve(0, meter_counter + 1)
        return Credentials(keys=keys, client_system_title=self._title, counters=counters)

    async def _meter_counter(self, target: MeterTarget) -> int:
        """The invocation counter 0.0.43.1.0.255, read by the public client (16)."""
        public = replace(
            target,
            connection=replace(target.connection, client_address=16, security=SecurityLevel.NONE),
        )
        session = await self.factory.open(public, Credentials(keys=MeterKeys()))
        try:
            value = await session.get(AttributeRef(DATA, INVOCATION_COUNTER, 2))
        finally:
            await session.close()
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise LinkError(f"meter {target.serial}: invocation counter is not an unsigned integer")
        return value
