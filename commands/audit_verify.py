"""Tamper evidence for the event store: per-aggregate hash chains and global checkpoints.

Every row of ``<schema>.meters_events`` carries ``chain = sha256(previous chain || canonical
bytes)``, set by a PostgreSQL trigger on insert; the previous chain is the same aggregate's
previous version's (empty for version 1). The canonical bytes are the aggregate id (16 bytes),
the version (8 bytes, big-endian, as ``int8send``), the topic's UTF-8 length (4 bytes) and bytes,
then the state. A checkpoint row hashes the previous checkpoint's digest and the chains of all
events up to a position, in notification order. ``verify`` recomputes both from the stored rows.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Generator, Iterator
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

EVENTS_TABLE = "meters_events"
CHECKPOINTS_TABLE = "audit_checkpoints"
_LOCK_KEY = 0x4E5_0A0D
_FETCH = 10_000
_REORDER_SEARCH_LIMIT = 200
"""Aggregates with more events than this are not searched for where a moved event came from."""

Kind = Literal["altered", "removed", "reordered", "unchained", "checkpoint"]

_DIGEST_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.hes_event_chain(
    prev bytea, id uuid, version bigint, topic text, state bytea
) RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT sha256(
        coalesce(prev, ''::bytea) || uuid_send(id) || int8send(version)
        || int4send(octet_length(convert_to(coalesce(topic, ''), 'UTF8')))
        || convert_to(coalesce(topic, ''), 'UTF8') || coalesce(state, ''::bytea)
    )
$fn$
"""

_TRIGGER_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.meters_events_chain() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    prev bytea;
BEGIN
    SELECT e.chain INTO prev FROM {schema}.meters_events e
     WHERE e.originator_id = NEW.originator_id
       AND e.originator_version = NEW.originator_version - 1;
    NEW.chain := {schema}.hes_event_chain(
        prev, NEW.originator_id, NEW.originator_version, NEW.topic, NEW.state);
    RETURN NEW;
END
$fn$
"""

_BACKFILL = """
DO $fn$
DECLARE
    r record;
    prev bytea;
BEGIN
    FOR r IN SELECT originator_id, originator_version, topic, state
               FROM {schema}.meters_events WHERE chain IS NULL
              ORDER BY originator_id, originator_version LOOP
        SELECT e.chain INTO prev FROM {schema}.meters_events e
         WHERE e.originator_id = r.originator_id
           AND e.originator_version = r.originator_version - 1;
        UPDATE {schema}.meters_events
           SET chain = {schema}.hes_event_chain(
               prev, r.originator_id, r.originator_version, r.topic, r.state)
         WHERE originator_id = r.originator_id AND originator_version = r.originator_version;
    END LOOP;
END
$fn$
"""

_CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS {schema}.audit_checkpoints (
    position bigint PRIMARY KEY,
    events bigint NOT NULL,
    digest bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """The first problem found in one aggregate's chain, or in the checkpoints."""

    kind: Kind
    aggregate_id: UUID | None = None
    version: int | None = None
    position: int | None = None
    """Checkpoint findings: the checkpoint's position (the range ends there)."""
    detail: str


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``verify`` recomputed and what it found."""

    intact: bool
    aggregates: int
    events: int
    checkpoints: int
    checkpointed_position: int
    """Position of the last checkpoint; events after it are covered by the chains only."""
    unanchored_events: int
    findings: list[Finding]
    seconds: float
    events_per_second: float


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """One checkpoint over the global order: give ``position`` and ``digest`` to an auditor."""

    position: int
    events: int
    """Events in (previous checkpoint's position, position]."""
    digest: str
    """Hex SHA-256."""
    created_at: datetime


def event_chain(prev: bytes, aggregate_id: UUID, version: int, topic: str, state: bytes) -> bytes:
    """The chain value of one event: the Python twin of ``hes_event_chain`` in PostgreSQL."""
    encoded = topic.encode()
    return hashlib.sha256(
        prev
        + aggregate_id.bytes
        + struct.pack(">q", version)
        + struct.pack(">i", len(encoded))
        + encoded
        + state
    ).digest()


def install_chain(conn: psycopg.Connection[Any], schema: str) -> bool:
    """Add the chain column, trigger and checkpoint table; backfill old rows. True if installed.

    Idempotent; run after the event table exists. The table is locked against writers only on
    the first run (when the trigger is missing), so no row is written unchained meanwhile.
    """
    ident = sql.Identifier(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(sql.SQL(_CHECKPOINTS).format(schema=ident))
        exists = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass"
            " AND tgname = 'meters_events_chain')",
            (f'"{schema}".{EVENTS_TABLE}',),
        ).fetchone()
        if exists is not None and exists[0]:
            return False
        conn.execute(
            sql.SQL("LOCK TABLE {}.{} IN EXCLUSIVE MODE").format(
                ident, sql.Identifier(EVENTS_TABLE)
            )
        )
        conn.execute(
            sql.SQL("ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS chain bytea").format(
                ident, sql.Identifier(EVENTS_TABLE)
            )
        )
        conn.execute(sql.SQL(_DIGEST_FUNCTION).format(schema=ident))
        conn.execute(sql.SQL(_TRIGGER_FUNCTION).format(schema=ident))
        conn.execute(sql.SQL(_BACKFILL).format(schema=ident))
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER meters_events_chain BEFORE INSERT ON {}.{}"
                " FOR EACH ROW EXECUTE FUNCTION {}.meters_events_chain()"
            ).format(ident, sql.Identifier(EVENTS_TABLE), ident)
        )
    return True


def create_checkpoint(conn: psycopg.Connection[Any], schema: str) -> Checkpoint | None:
    """Record a checkpoint up to the current last position; None when nothing is new."""
    ident = sql.Identifier(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY + 1,))
        last = conn.execute(
            sql.SQL(
                "SELECT position, digest FROM {}.audit_checkpoints ORDER BY position DESC LIMIT 1"
            ).format(ident)
        ).fetchone()
        start, prev = (int(last[0]), bytes(last[1])) if last else (0, b"")
        top = conn.execute(
            sql.SQL("SELECT max(notification_id) FROM {}.{}").format(
                ident, sql.Identifier(EVENTS_TABLE)
            )
        ).fetchone()
        end = int(top[0]) if top and top[0] is not None else 0
        if end <= start:
            return None
        digest = hashlib.sha256(prev)
        count = 0
        for _, chain in _chains(conn, schema, start, end):
            digest.update(chain)
            count += 1
        row = conn.execute(
            sql.SQL(
                "INSERT INTO {}.audit_checkpoints (position, events, digest)"
                " VALUES (%s, %s, %s) RETURNING created_at"
            ).format(ident),
            (end, count, digest.digest()),
        ).fetchone()
        assert row is not None
        return Checkpoint(position=end, events=count, digest=digest.hexdigest(), created_at=row[0])


def verify(
    conn: psycopg.Connection[Any], schema: str, anchors: dict[int, bytes] | None = None
) -> VerifyReport:
    """Recompute every aggregate's chain and every checkpoint; report the first problems.

    ``conn`` must be idle (no open transaction): the check runs in one read-only snapshot.
    ``anchors`` are checkpoints kept outside the database (position → digest) that must match.
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("verify needs an idle connection")
    started = time.perf_counter()
    findings: list[Finding] = []
    aggregates = events = 0
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for aggregate_id, rows in _aggregates(conn, schema):
            aggregates += 1
            events += len(rows)
            finding = check_aggregate(aggregate_id, rows)
            if finding is not None:
                findings.append(finding)
        checkpoints, position, checkpoint_findings = _check_checkpoints(conn, schema, anchors or {})
        findings.extend(checkpoint_findings)
        after = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{} WHERE notification_id > %s").format(
                sql.Identifier(schema), sql.Identifier(EVENTS_TABLE)
            ),
            (position,),
        ).fetchone()
    seconds = time.perf_counter() - started
    return VerifyReport(
        intact=not findings,
        aggregates=aggregates,
        events=events,
        checkpoints=checkpoints,
        checkpointed_position=position,
        unanchored_events=int(after[0]) if after else 0,
        findings=findings,
        seconds=round(seconds, 3),
        events_per_second=round(events / seconds, 1) if seconds > 0 else 0.0,
    )


class StoredRow(msgspec.Struct, frozen=True, array_like=True):
    """One event row as stored: version, topic, state and chain."""

    version: int
    topic: str
    state: bytes
    chain: bytes | None


def check_aggregate(aggregate_id: UUID, rows: list[StoredRow]) -> Finding | None:
    """The first problem in one aggregate's rows (ordered by version), or None."""
    prev = b""
    for expected, row in enumerate(rows, start=1):
        if row.version != expected:
            if row.version > expected:
                missing = (
                    f"version {expected}"
                    if row.version == expected + 1
                    else f"versions {expected}-{row.version - 1}"
                )
                return _finding("removed", aggregate_id, expected, f"{missing} missing")
            return _finding("altered", aggregate_id, row.version, "version number out of range")
        computed = event_chain(prev, aggregate_id, row.version, row.topic, row.state)
        if row.chain is None:
            return _finding(
                "unchained", aggregate_id, row.version, "no chain: written around the trigger"
            )
        if row.chain != computed:
            return _mismatch(aggregate_id, rows, expected - 1, computed)
        prev = computed
    return None


def _mismatch(aggregate_id: UUID, rows: list[StoredRow], index: int, computed: bytes) -> Finding:
    row = rows[index]
    moved = _recorded_as(aggregate_id, rows, row)
    if moved is not None:
        return _finding(
            "reordered",
            aggregate_id,
            row.version,
            f"the event stored as version {row.version} was recorded as version {moved}",
        )
    if index + 1 < len(rows):
        following = rows[index + 1]
        if following.chain == event_chain(
            computed, aggregate_id, following.version, following.topic, following.state
        ):
            return _finding(
                "altered", aggregate_id, row.version, "chain value edited; the event is intact"
            )
    return _finding(
        "altered",
        aggregate_id,
        row.version,
        "stored chain does not match: this event's topic or state changed, or an earlier"
        " event changed and its chain was recomputed",
    )


def _recorded_as(aggregate_id: UUID, rows: list[StoredRow], row: StoredRow) -> int | None:
    """The version this event's content was chained under, if it is another stored chain."""
    if len(rows) > _REORDER_SEARCH_LIMIT:
        return None
    chains = {r.chain for r in rows if r.chain is not None}
    prevs = [b"", *chains]
    for version in range(1, len(rows) + 2):
        if version == row.version:
            continue
        for prev in prevs:
            if event_chain(prev, aggregate_id, version, row.topic, row.state) in chains:
                return version
    return None


def _finding(kind: Kind, aggregate_id: UUID, version: int, detail: str) -> Finding:
    return Finding(kind=kind, aggregate_id=aggregate_id, version=version, detail=detail)


def _aggregates(
    conn: psycopg.Connection[Any], schema: str
) -> Iterator[tuple[UUID, list[StoredRow]]]:
    """Each aggregate's rows in version order, streamed through a server-side cursor."""
    statement = sql.SQL(
        "SELECT originator_id, originator_version, topic, state, chain FROM {}.{}"
        " ORDER BY originator_id, originator_version"
    ).format(sql.Identifier(schema), sql.Identifier(EVENTS_TABLE))
    current: UUID | None = None
    rows: list[StoredRow] = []
    with conn.cursor(name="hes_audit_verify") as cursor:
        cursor.itersize = _FETCH
        cursor.execute(statement)
        for originator_id, version, topic, state, chain in cursor:
            if originator_id != current:
                if current is not None:
                    yield current, rows
                current, rows = originator_id, []
            rows.append(
                StoredRow(
                    int(version), topic, bytes(state), None if chain is None else bytes(chain)
                )
            )
    if current is not None:
        yield current, rows


def _chains(
    conn: psycopg.Connection[Any], schema: str, after: int, until: int
) -> Generator[tuple[int, bytes]]:
    """(position, chain) of the events in (after, until], in notification order."""
    statement = sql.SQL(
        "SELECT notification_id, chain FROM {}.{}"
        " WHERE notification_id > %s AND notification_id <= %s ORDER BY notification_id"
    ).format(sql.Identifier(schema), sql.Identifier(EVENTS_TABLE))
    with conn.cursor(name="hes_audit_chains") as cursor:
        cursor.itersize = _FETCH
        cursor.execute(statement, (after, until))
        for position, chain in cursor:
            yield int(position), b"" if chain is None else bytes(chain)


def _check_checkpoints(
    conn: psycopg.Connection[Any], schema: str, anchors: dict[int, bytes]
) -> tuple[int, int, list[Finding]]:
    """(checkpoints, last position, findings): the first checkpoint that no longer matches."""
    stored = conn.execute(
        sql.SQL(
            "SELECT position, events, digest FROM {}.audit_checkpoints ORDER BY position"
        ).format(sql.Identifier(schema))
    ).fetchall()
    findings: list[Finding] = []
    positions = {int(p) for p, _, _ in stored}
    for position in sorted(anchors):
        if position not in positions:
            findings.append(
                Finding(
                    kind="checkpoint",
                    position=position,
                    detail="anchored checkpoint is missing from the database",
                )
            )
    if not stored:
        return 0, 0, findings
    last = int(stored[-1][0])
    chains = _chains(conn, schema, 0, last)
    pending = next(chains, None)
    previous, prev_digest = 0, b""
    for position, count, digest in stored:
        h = hashlib.sha256(prev_digest)
        seen = 0
        while pending is not None and pending[0] <= position:
            h.update(pending[1])
            seen += 1
            pending = next(chains, None)
        recomputed = h.digest()
        anchor = anchors.get(int(position))
        problem = None
        if recomputed != bytes(digest) or seen != count:
            problem = (
                f"events in ({previous}, {position}] no longer match the checkpoint"
                f" ({seen} events now, {count} when it was taken)"
            )
        elif anchor is not None and anchor != recomputed:
            problem = "checkpoint differs from the anchor kept outside the database"
        if problem is not None:
            findings.append(Finding(kind="checkpoint", position=int(position), detail=problem))
            break
        previous, prev_digest = int(position), recomputed
    chains.close()
    return len(stored), last, findings
