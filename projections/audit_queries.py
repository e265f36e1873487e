"""The kept results of ``hes audit verify`` (table ``audit_verifications``), newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from commands.audit_verify import VerifyReport


class VerificationRow(msgspec.Struct, frozen=True, kw_only=True):
    """One run of ``hes audit verify``: when, by whom, with how many anchors, and its report."""

    ran_at: datetime
    ran_by: str
    anchors: int
    report: VerifyReport


class AuditQueries:
    """Reads the kept verification results in ``schema`` through an async pool."""

    def __init__(self, pool: AsyncConnectionPool[Any], schema: str) -> None:
        self.pool = pool
        self.schema = sql.Identifier(schema)

    async def last_verification(self) -> VerificationRow | None:
        """The newest kept result, or None when ``hes audit verify`` never ran here."""
        query = sql.SQL(
            "SELECT ran_at, ran_by, anchors, report FROM {}.audit_verifications"
            " ORDER BY id DESC LIMIT 1"
        ).format(self.schema)
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query)
            row = await cur.fetchone()
        return None if row is None else msgspec.convert(row, VerificationRow, strict=False)
