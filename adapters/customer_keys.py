"""Customers' data keys, kept outside the events, sealed under the customer master key.

One row per customer in ``{schema}.customer_keys`` (migration 15): the 256-bit data key sealed
with AES-256-GCM under the master key. Erasing a customer deletes its row: every personal value
sealed under that key becomes unreadable for good, wherever the events were copied.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from pathlib import Path
from typing import Any
from uuid import UUID

from psycopg import sql

from adapters.key_file import load_or_create_key_file
from domain.personal_data import KEY_BYTES, new_data_key, unwrap_key, wrap_key

MASTER_KEY_FILE = "customer-master-key"


def parse_customer_master_key(text: str) -> bytes:
    """The 32-byte master key given as 64 hex digits or base64; ``ValueError`` otherwise."""
    cleaned = text.strip()
    if len(cleaned) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(cleaned)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ValueError(
            "HES_CUSTOMER_MASTER_KEY: must be 32 bytes given as 64 hex digits or base64"
        )
    return raw


def load_or_create_customer_master_key(data_dir: Path) -> bytes:
    """The master key kept in ``data_dir/customer-master-key`` (created once, mode 0600)."""
    text = load_or_create_key_file(
        data_dir / MASTER_KEY_FILE,
        lambda: base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n",
    )
    return parse_customer_master_key(text)


class CustomerKeys:
    """Creates, opens and destroys customers' data keys in the event store's database."""

    def __init__(self, datastore: Any, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise ValueError("the customer master key must be 32 bytes")
        self._datastore = datastore
        self._master = master_key
        self._table = sql.Identifier(datastore.schema, "customer_keys")

    def ensure(self, id_: UUID, account: str) -> bytes:
        """The customer's data key, created now unless it exists (concurrent callers agree)."""
        wrapped = wrap_key(self._master, account, new_data_key())
        with self._datastore.transaction(commit=True) as curs:
            curs.execute(
                sql.SQL(
                    "INSERT INTO {} (customer_id, sealed_key) VALUES (%s, %s) "
                    "ON CONFLICT (customer_id) DO NOTHING"
                ).format(self._table),
                (id_, wrapped),
            )
            curs.execute(
                sql.SQL("SELECT sealed_key FROM {} WHERE customer_id = %s").format(self._table),
                (id_,),
            )
            row = curs.fetchone()
        return unwrap_key(self._master, account, bytes(row["sealed_key"]))

    def get(self, id_: UUID, account: str) -> bytes | None:
        """The customer's data key, or None when it was destroyed (or never made)."""
        with self._datastore.transaction(commit=False) as curs:
            curs.execute(
                sql.SQL("SELECT sealed_key FROM {} WHERE customer_id = %s").format(self._table),
                (id_,),
            )
            row = curs.fetchone()
        return None if row is None else unwrap_key(self._master, account, bytes(row["sealed_key"]))

    def destroy(self, id_: UUID) -> bool:
        """Delete the customer's data key; False when there was none."""
        with self._datastore.transaction(commit=True) as curs:
            curs.execute(
                sql.SQL("DELETE FROM {} WHERE customer_id = %s").format(self._table), (id_,)
            )
            return bool(curs.rowcount)

    def open_wrapped(self, account: str, wrapped: bytes | None) -> bytes | None:
        """A data key read by a query (None stays None: erased)."""
        return None if wrapped is None else unwrap_key(self._master, account, wrapped)

    def ensure_many(self, customers: list[tuple[UUID, str]]) -> dict[UUID, bytes]:
        """Data keys of many customers at once (created where missing), by customer id."""
        if not customers:
            return {}
        accounts = dict(customers)
        rows = [
            (id_, wrap_key(self._master, account, new_data_key())) for id_, account in customers
        ]
        with self._datastore.transaction(commit=True) as curs:
            curs.executemany(
                sql.SQL(
                    "INSERT INTO {} (customer_id, sealed_key) VALUES (%s, %s) "
                    "ON CONFLICT (customer_id) DO NOTHING"
                ).format(self._table),
                rows,
            )
            curs.execute(
                sql.SQL(
                    "SELECT customer_id, sealed_key FROM {} WHERE customer_id = ANY(%s)"
                ).format(self._table),
                (list(accounts),),
            )
            found = curs.fetchall()
        return {
            r["customer_id"]: unwrap_key(
                self._master, accounts[r["customer_id"]], bytes(r["sealed_key"])
            )
            for r in found
        }


def customer_master_key(configured: str | None, data_dir: Path) -> bytes:
    """``HES_CUSTOMER_MASTER_KEY`` when set, else the one generated into ``data_dir``."""
    if configured:
        return parse_customer_master_key(configured)
    return load_or_create_customer_master_key(Path(data_dir))
