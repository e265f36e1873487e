"""Meters' DLMS secrets encrypted at rest (AES-256-GCM under a master key), per key version.

Each secret is sealed with a fresh 96-bit nonce and bound, as associated data, to its meter,
key version and kind: a sealed value copied to another row fails authentication instead of
silently becoming another meter's key. Nothing here logs or formats a secret; errors name the
meter, version and kind only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import secrets
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from adapters.key_file import load_or_create_key_file
from domain.errors import Conflict
from domain.meter_keys import KeyKind, MeterKeys

MASTER_KEY_BYTES = 32
MASTER_KEY_FILE = "dlms-master-key"
COUNTER_MARGIN = 1 << 16
"""Client invocation counters skipped when a key version keeps the EK (see ``store``)."""
_LOCK_CLASS = 0x4E5D
"""First half of the advisory lock key of a meter's key changes (the second: the meter)."""


class KeyVaultError(Exception):
    """A stored secret cannot be used (tampered with, or sealed under another master key)."""


def parse_master_key(text: str) -> bytes:
    """The 32-byte master key given as 64 hex digits or base64; ``ValueError`` otherwise."""
    cleaned = text.strip()
    if len(cleaned) == 2 * MASTER_KEY_BYTES:
        try:
            return bytes.fromhex(cleaned)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != MASTER_KEY_BYTES:
        raise ValueError(
            "HES_DLMS_MASTER_KEY: must be 32 bytes given as 64 hex digits or base64"
        ) from None
    return raw


def load_or_create_master_key(data_dir: Path) -> bytes:
    """The master key kept in ``data_dir/dlms-master-key`` (created once, mode 0600)."""
    text = load_or_create_key_file(
        data_dir / MASTER_KEY_FILE,
        lambda: base64.b64encode(secrets.token_bytes(MASTER_KEY_BYTES)).decode() + "\n",
    )
    return parse_master_key(text)


class KeyCipher:
    """Seals and opens single secrets under the master key."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != MASTER_KEY_BYTES:
            raise ValueError("the master key must be 32 bytes")
        self._aead = AESGCM(master_key)

    def __repr__(self) -> str:
        return "KeyCipher(<redacted>)"

    @staticmethod
    def _context(meter: UUID, version: int, kind: KeyKind) -> bytes:
        return f"hes-dlms-key|{meter}|{version}|{kind.value}".encode()

    def seal(self, meter: UUID, version: int, kind: KeyKind, secret: bytes) -> tuple[bytes, bytes]:
        """(nonce, ciphertext with tag) of ``secret`` bound to meter, version and kind."""
        nonce = secrets.token_bytes(12)
        return nonce, self._aead.encrypt(nonce, secret, self._context(meter, version, kind))

    def open(self, meter: UUID, version: int, kind: KeyKind, nonce: bytes, sealed: bytes) -> bytes:
        """The secret in ``sealed``; ``KeyVaultError`` when it fails authentication."""
        try:
            return self._aead.decrypt(nonce, sealed, self._context(meter, version, kind))
        except InvalidTag:
            raise KeyVaultError(
                f"stored {kind.value} of meter {meter} (key version {version}) failed "
                "authentication: tampered with, or sealed under another master key"
            ) from None

    def open_rows(self, meter: UUID, version: int, rows: list[tuple[Any, ...]]) -> MeterKeys:
        """Keys from ``(kind, nonce, sealed)`` rows."""
        return MeterKeys.from_dict(
            {
                KeyKind(kind): self.open(meter, version, KeyKind(kind), bytes(nonce), bytes(sealed))
                for kind, nonce, sealed in rows
            }
        )


_SELECT = "SELECT kind, nonce, sealed FROM {}.dlms_keys WHERE meter_id = %s AND key_version = %s"


class KeyVault:
    """PostgreSQL key store of the command side (a ``commands.meter_keys.KeyStore``)."""

    def __init__(self, database_url: str, schema: str, cipher: KeyCipher) -> None:
        self._url = database_url
        self._schema = sql.Identifier(schema)
        self._cipher = cipher

    def __repr__(self) -> str:
        return "KeyVault(<redacted>)"

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._url, autocommit=True, connect_timeout=5)

    @contextlib.contextmanager
    def lock(self, meter: UUID) -> Iterator[None]:
        """Hold the meter's key lock (a PostgreSQL advisory lock) for the block."""
        objid = int.from_bytes(meter.bytes[:4], "big", signed=True)
        with self._connect() as conn:
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_CLASS, objid))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_CLASS, objid))

    def load(self, meter: UUID, version: int) -> MeterKeys:
        """The secrets stored as ``version`` (none for version 0)."""
        if version <= 0:
            return MeterKeys()
        with self._connect() as conn:
            rows = conn.execute(sql.SQL(_SELECT).format(self._schema), (meter, version)).fetchall()
        return self._cipher.open_rows(meter, version, rows)

    def store(self, meter: UUID, version: int, keys: MeterKeys, *, keep_counters: bool) -> None:
        """Store ``keys`` as ``version`` (replacing an unrecorded earlier try of it)."""
        s = self._schema
        with self._connect() as conn, conn.transaction():
            conn.execute(
                sql.SQL("DELETE FROM {}.dlms_keys WHERE meter_id = %s AND key_version = %s").format(
                    s
                ),
                (meter, version),
            )
            for kind, secret in keys.as_dict().items():
                nonce, sealed = self._cipher.seal(meter, version, kind, secret)
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.dlms_keys (meter_id, key_version, kind, nonce, sealed) "
                        "VALUES (%s, %s, %s, %s, %s)"
                    ).format(s),
                    (meter, version, kind.value, nonce, sealed),
                )
            conn.execute(
                sql.SQL(
                    "DELETE FROM {}.dlms_invocation_counters "
                    "WHERE meter_id = %s AND key_version = %s"
                ).format(s),
                (meter, version),
            )
            if keep_counters:
                # Same EK: the counters go on. A session still running on the old version may
                # reserve a few more counters after this copy, so the new one starts well above.
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {0}.dlms_invocation_counters (meter_id, key_version, "
                        "client_next, server_last, meter_reported) "
                        "SELECT meter_id, %s, client_next + %s, server_last, meter_reported "
                        "FROM {0}.dlms_invocation_counters "
                        "WHERE meter_id = %s AND key_version = %s"
                    ).format(s),
                    (version, COUNTER_MARGIN, meter, version - 1),
                )

    def set_system_title(self, meter: UUID, system_title: bytes) -> None:
        """Record the meter's system title; ``Conflict`` when another meter already has it."""
        try:
            with self._connect() as conn:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.dlms_system_titles (system_title, meter_id) "
                        "VALUES (%s, %s) ON CONFLICT (meter_id) DO UPDATE SET "
                        "system_title = EXCLUDED.system_title, updated_at = now()"
                    ).format(self._schema),
                    (system_title, meter),
                )
        except psycopg.errors.UniqueViolation:
            raise Conflict(
                f"system title {system_title.hex().upper()} already belongs to another meter"
            ) from None


async def load_keys(
    pool: AsyncConnectionPool[Any], schema: str, cipher: KeyCipher, meter: UUID, version: int
) -> MeterKeys:
    """The secrets of ``meter`` at ``version``, read through an async pool (sessions)."""
    if version <= 0:
        return MeterKeys()
    opened = (await load_many_keys(pool, schema, cipher, [(meter, version)]))[(meter, version)]
    if isinstance(opened, KeyVaultError):
        raise opened
    return opened


async def load_many_keys(
    pool: AsyncConnectionPool[Any],
    schema: str,
    cipher: KeyCipher,
    wanted: Collection[tuple[UUID, int]],
) -> dict[tuple[UUID, int], MeterKeys | KeyVaultError]:
    """The secrets of many (meter, key version) pairs in one query; a failure per pair."""
    asked = [(m, v) for m, v in wanted if v > 0]
    if not asked:
        return {}
    query = sql.SQL(
        "SELECT meter_id, key_version, kind, nonce, sealed FROM {}.dlms_keys "
        "WHERE (meter_id, key_version) IN (SELECT * FROM unnest(%s::uuid[], %s::int[]))"
    ).format(sql.Identifier(schema))
    async with pool.connection() as conn:
        cur = await conn.execute(query, ([m for m, _ in asked], [v for _, v in asked]))
        rows = await cur.fetchall()
    grouped: dict[tuple[UUID, int], list[tuple[Any, ...]]] = {pair: [] for pair in asked}
    for meter, version, kind, nonce, sealed in rows:
        grouped[(meter, version)].append((kind, nonce, sealed))
    opened: dict[tuple[UUID, int], MeterKeys | KeyVaultError] = {}
    for (meter, version), found in grouped.items():
        try:
            opened[(meter, version)] = cipher.open_rows(meter, version, found)
        except KeyVaultError as exc:
            opened[(meter, version)] = exc
    return opened
