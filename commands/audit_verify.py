"""Tamper evidence for the event store: per-aggregate hash chains and per-log checkpoints.

Each application writes its own log, the event table ``<schema>.<log>_events`` (logs
``meters``, ``tariffs``, ``alerts``). Every row carries ``chain = sha256(previous chain ||
canonical bytes)``, set by a PostgreSQL trigger on insert; the previous chain is the same
aggregate's previous version's (empty for version 1). The canonical bytes are the aggregate id
(16 bytes), the version (8 bytes, big-endian, as ``int8send``), the topic's UTF-8 length
(4 bytes) and bytes, then the state. A checkpoint row hashes the previous checkpoint of the same
log and the chains of that log's events up to a position, in notification order (each table
numbers its own events). ``verify`` recomputes both from the stored rows.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

LOGS: tuple[str, ...] = (
    "meters",
    "tariffs",
    "alerts",
    "api_keys",
    "sims",
    "operations",
    "customers",
    "fleet",
)
"""The chained logs: the applications' names, which the library's event tables are named after."""
LEGACY_LOG = "meters"
"""The log of checkpoints and anchors from before there was more than one."""
CHECKPOINTS_TABLE = "audit_checkpoints"
_LOCK_KEY = 0x4E5_0A0D
_FETCH = 10_000
_REORDER_SEARCH_LIMIT = 200
"""Aggregates with more events than this are not searched for where a moved event came from."""

Kind = Literal["altered", "removed", "reordered", "unchained", "checkpoint"]
AnchorKey = tuple[str, int]
"""(log, position) of a checkpoint."""

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
CREATE OR REPLACE FUNCTION {schema}.{function}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    prev bytea;
BEGIN
    SELECT e.chain INTO prev FROM {schema}.{table} e
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
               FROM {schema}.{table} WHERE chain IS NULL
              ORDER BY originator_id, originator_version LOOP
        SELECT e.chain INTO prev FROM {schema}.{table} e
         WHERE e.originator_id = r.originator_id
           AND e.originator_version = r.originator_version - 1;
        UPDATE {schema}.{table}
           SET chain = {schema}.hes_event_chain(
               prev, r.originator_id, r.originator_version, r.topic, r.state)
         WHERE originator_id = r.originator_id AND originator_version = r.originator_version;
    END LOOP;
END
$fn$
"""

_CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS {schema}.audit_checkpoints (
    log text NOT NULL,
    position bigint NOT NULL,
    events bigint NOT NULL,
    digest bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (log, position)
)
"""


def events_table(log: str) -> str:
    """The event table of a log (the library names it after the application)."""
    return f"{log}_events"


def _trigger_name(log: str) -> str:
    return f"{events_table(log)}_chain"


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """The first problem found in one aggregate's chain, or in one log's checkpoints."""

    log: str
    kind: Kind
    aggregate_id: UUID | None = None
    version: int | None = None
    position: int | None = None
    """Checkpoint findings: the checkpoint's position in the log (the range ends there)."""
    detail: str


class LogReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``verify`` recomputed in one log."""

    log: str
    table: str
    intact: bool
    aggregates: int
    events: int
    checkpoints: int
    checkpointed_position: int
    """Position of the log's last checkpoint; events after it are covered by the chains only."""
    unanchored_events: int


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``verify`` recomputed and what it found: totals over all logs, then each log."""

    intact: bool
    aggregates: int
    events: int
    checkpoints: int
    unanchored_events: int
    """Events after their log's last checkpoint, in all logs."""
    logs: list[LogReport]
    findings: list[Finding]
    seconds: float
    events_per_second: float


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """One checkpoint over a log: give its ``anchor()`` to an auditor."""

    log: str
    position: int
    events: int
    """Events in (previous checkpoint's position, position] of this log."""
    digest: str
    """Hex SHA-256."""
    created_at: datetime

    def anchor(self) -> str:
        """The checkpoint as ``LOG:POSITION:HEXDIGEST``, the form ``verify --anchor`` takes."""
        return f"{self.log}:{self.position}:{self.digest}"


def record_verification(
    conn: psycopg.Connection[Any], schema: str, report: VerifyReport, ran_by: str, anchors: int
) -> None:
    """Keep a ``verify`` result (``conn`` in autocommit) for the API to show auditors."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.audit_verifications (ran_by, intact, anchors, report)"
            " VALUES (%s, %s, %s, %s::jsonb)"
        ).format(sql.Identifier(schema)),
        (ran_by, report.intact, anchors, msgspec.json.encode(report).decode()),
    )


def parse_anchor(text: str, logs: Sequence[str] = LOGS) -> tuple[AnchorKey, bytes]:
    """``LOG:POSITION:HEXDIGEST`` (or the older ``POSITION:HEXDIGEST``, a meters checkpoint)."""
    parts = text.strip().split(":")
    if len(parts) == 2:
        parts.insert(0, LEGACY_LOG)
    if len(parts) != 3:
        raise ValueError(f"{text!r}: give LOG:POSITION:HEXDIGEST")
    log, position, digest = parts
    if log not in logs:
        raise ValueError(f"{text!r}: log must be one of {', '.join(logs)}")
    try:
        number = int(position)
        value = bytes.fromhex(digest)
    except ValueError:
        raise ValueError(f"{text!r}: position is a number and the digest hex") from None
    if number < 1:
        raise ValueError(f"{text!r}: position must be 1 or more")
    if len(value) != 32:
        raise ValueError(f"{text!r}: the digest is 64 hex characters")
    return (log, number), value


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


def install_chain(
    conn: psycopg.Connection[Any], schema: str, logs: Sequence[str] = LOGS
) -> list[str]:
    """Add chain columns and triggers and the checkpoint table; backfill old rows.

    Returns the logs whose trigger was installed now. Idempotent; run after the event tables
    exist. A table is locked against writers only on its first run (when its trigger is
    missing), so no row is written unchained meanwhile. A checkpoint table from before logs
    existed gains its ``log`` column, every old row being a meters checkpoint.
    """
    ident = sql.Identifier(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(sql.SQL(_CHECKPOINTS).format(schema=ident))
        _upgrade_checkpoints(conn, schema)
    return [log for log in logs if _install_log(conn, schema, log)]


def _upgrade_checkpoints(conn: psycopg.Connection[Any], schema: str) -> None:
    """Key single-log checkpoints by (log, position); existing rows become the meters log's."""
    table = sql.Identifier(schema, CHECKPOINTS_TABLE)
    name = table.as_string(conn)
    has_log = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass"
        " AND attname = 'log' AND NOT attisdropped)",
        (name,),
    ).fetchone()
    if has_log is not None and has_log[0]:
        return
    conn.execute(
        sql.SQL("ALTER TABLE {} ADD COLUMN log text NOT NULL DEFAULT {}").format(
            table, sql.Literal(LEGACY_LOG)
        )
    )
    conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN log DROP DEFAULT").format(table))
    key = conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
        (name,),
    ).fetchone()
    if key is not None:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, sql.Identifier(key[0]))
        )
    conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (log, position)").format(table))


def _install_log(conn: psycopg.Connection[Any], schema: str, log: str) -> bool:
    ident = sql.Identifier(schema)
    table = sql.Identifier(events_table(log))
    trigger = sql.Identifier(_trigger_name(log))
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        if _trigger_state(conn, schema, log) is not None:
            return False
        conn.execute(sql.SQL("LOCK TABLE {}.{} IN EXCLUSIVE MODE").format(ident, table))
        conn.execute(
            sql.SQL("ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS chain bytea").format(ident, table)
        )
        conn.execute(sql.SQL(_DIGEST_FUNCTION).format(schema=ident))
        conn.execute(sql.SQL(_TRIGGER_FUNCTION).format(schema=ident, function=trigger, table=table))
        conn.execute(sql.SQL(_BACKFILL).format(schema=ident, table=table))
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER {trigger} BEFORE INSERT ON {schema}.{table}"
                " FOR EACH ROW EXECUTE FUNCTION {schema}.{trigger}()"
            ).format(trigger=trigger, schema=ident, table=table)
        )
    return True


def _trigger_state(conn: psycopg.Connection[Any], schema: str, log: str) -> str | None:
    """``pg_trigger.tgenabled`` of the log's chain trigger ('D' = disabled), None if absent."""
    row = conn.execute(
        "SELECT tgenabled FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname = %s",
        (sql.Identifier(schema, events_table(log)).as_string(conn), _trigger_name(log)),
    ).fetchone()
    return None if row is None else str(row[0])


def create_checkpoint(
    conn: psycopg.Connection[Any], schema: str, logs: Sequence[str] = LOGS
) -> list[Checkpoint]:
    """Checkpoint every log up to its current last position; one per log with new events."""
    ident = sql.Identifier(schema)
    made: list[Checkpoint] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY + 1,))
        for log in logs:
            table = events_table(log)
            last = conn.execute(
                sql.SQL(
                    "SELECT position, digest FROM {}.audit_checkpoints WHERE log = %s"
                    " ORDER BY position DESC LIMIT 1"
                ).format(ident),
                (log,),
            ).fetchone()
            start, prev = (int(last[0]), bytes(last[1])) if last else (0, b"")
            # The library's writers lock the table while inserting, so every position up to
            # the visible maximum is committed: no event can appear below it later.
            top = conn.execute(
                sql.SQL("SELECT max(notification_id) FROM {}.{}").format(
                    ident, sql.Identifier(table)
                )
            ).fetchone()
            end = int(top[0]) if top and top[0] is not None else 0
            if end <= start:
                continue
            digest = hashlib.sha256(prev)
            count = 0
            for _, chain in _chains(conn, schema, table, start, end):
                digest.update(chain)
                count += 1
            row = conn.execute(
                sql.SQL(
                    "INSERT INTO {}.audit_checkpoints (log, position, events, digest)"
                    " VALUES (%s, %s, %s, %s) RETURNING created_at"
                ).format(ident),
                (log, end, count, digest.digest()),
            ).fetchone()
            assert row is not None
            made.append(
                Checkpoint(
                    log=log,
                    position=end,
                    events=count,
                    digest=digest.hexdigest(),
                    created_at=row[0],
                )
            )
    return made


def verify(
    conn: psycopg.Connection[Any],
    schema: str,
    anchors: Mapping[AnchorKey, bytes] | None = None,
    logs: Sequence[str] = LOGS,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Recompute every aggregate's chain and every checkpoint of every log; report problems.

    ``conn`` must be idle (no open transaction): the check runs in one read-only snapshot.
    ``anchors`` are checkpoints kept outside the database ((log, position) → digest) that
    must match. ``progress`` is told ``(events checked, events in all logs)`` as it goes.
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("verify needs an idle connection")
    kept = dict(anchors or {})
    unknown = sorted({log for log, _ in kept} - set(logs))
    if unknown:
        raise ValueError(f"anchors of unknown logs {unknown}; the logs are {', '.join(logs)}")
    started = time.perf_counter()
    parts: list[LogReport] = []
    findings: list[Finding] = []
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        counter = _Counter(progress, sum(_count(conn, schema, log) for log in logs))
        for log in logs:
            part, found = _verify_log(
                conn, schema, log, {p: d for (name, p), d in kept.items() if name == log}, counter
            )
            parts.append(part)
            findings.extend(found)
    seconds = time.perf_counter() - started
    events = sum(p.events for p in parts)
    return VerifyReport(
        intact=not findings,
        aggregates=sum(p.aggregates for p in parts),
        events=events,
        checkpoints=sum(p.checkpoints for p in parts),
        unanchored_events=sum(p.unanchored_events for p in parts),
        logs=parts,
        findings=findings,
        seconds=round(seconds, 3),
        events_per_second=round(events / seconds, 1) if seconds > 0 else 0.0,
    )


class _Counter:
    """Events checked so far, passed on to a progress callback (at most every 1,000)."""

    def __init__(self, progress: Callable[[int, int], None] | None, total: int) -> None:
        self.progress, self.total, self.done, self._told = progress, total, 0, 0

    def add(self, events: int) -> None:
        self.done += events
        if self.progress is not None and (
            self.done - self._told >= 1000 or self.done >= self.total
        ):
            self._told = self.done
            self.progress(self.done, max(self.total, self.done))


def _count(conn: psycopg.Connection[Any], schema: str, log: str) -> int:
    """Events in ``log`` (0 when its table is missing: verify reports that)."""
    table = sql.Identifier(schema, events_table(log))
    exists = conn.execute("SELECT to_regclass(%s)", (table.as_string(conn),)).fetchone()
    if exists is None or exists[0] is None:
        return 0
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    return int(row[0]) if row else 0


def _verify_log(
    conn: psycopg.Connection[Any],
    schema: str,
    log: str,
    anchors: dict[int, bytes],
    counter: _Counter | None = None,
) -> tuple[LogReport, list[Finding]]:
    table = events_table(log)
    exists = conn.execute(
        "SELECT to_regclass(%s)", (sql.Identifier(schema, table).as_string(conn),)
    ).fetchone()
    if exists is None or exists[0] is None:
        missing = Finding(log=log, kind="removed", detail=f"event table {table} is missing")
        return _log_report(log, [missing], 0, 0, 0, 0, 0), [missing]
    findings: list[Finding] = []
    trigger = _trigger_state(conn, schema, log)
    if trigger is None or trigger == "D":
        state = "missing" if trigger is None else "disabled"
        findings.append(
            Finding(
                log=log,
                kind="unchained",
                detail=f"the chain trigger of {table} is {state}: events written now are not"
                " chained",
            )
        )
    aggregates = events = 0
    for aggregate_id, rows in _aggregates(conn, schema, table):
        aggregates += 1
        events += len(rows)
        if counter is not None:
            counter.add(len(rows))
        finding = check_aggregate(log, aggregate_id, rows)
        if finding is not None:
            findings.append(finding)
    checkpoints, position, checkpoint_findings = _check_checkpoints(conn, schema, log, anchors)
    findings.extend(checkpoint_findings)
    after = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.{} WHERE notification_id > %s").format(
            sql.Identifier(schema), sql.Identifier(table)
        ),
        (position,),
    ).fetchone()
    unanchored = int(after[0]) if after else 0
    return _log_report(
        log, findings, aggregates, events, checkpoints, position, unanchored
    ), findings


def _log_report(
    log: str,
    findings: list[Finding],
    aggregates: int,
    events: int,
    checkpoints: int,
    position: int,
    unanchored: int,
) -> LogReport:
    return LogReport(
        log=log,
        table=events_table(log),
        intact=not findings,
        aggregates=aggregates,
        events=events,
        checkpoints=checkpoints,
        checkpointed_position=position,
        unanchored_events=unanchored,
    )


class StoredRow(msgspec.Struct, frozen=True, array_like=True):
    """One event row as stored: version, topic, state and chain."""

    version: int
    topic: str
    state: bytes
    chain: bytes | None


def check_aggregate(log: str, aggregate_id: UUID, rows: list[StoredRow]) -> Finding | None:
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
                return _finding(log, "removed", aggregate_id, expected, f"{missing} missing")
            return _finding(
                log, "altered", aggregate_id, row.version, "version number out of range"
            )
        computed = event_chain(prev, aggregate_id, row.version, row.topic, row.state)
        if row.chain is None:
            return _finding(
                log, "unchained", aggregate_id, row.version, "no chain: written around the trigger"
            )
        if row.chain != computed:
            return _mismatch(log, aggregate_id, rows, expected - 1, computed)
        prev = computed
    return None


def _mismatch(
    log: str, aggregate_id: UUID, rows: list[StoredRow], index: int, computed: bytes
) -> Finding:
    row = rows[index]
    moved = _recorded_as(aggregate_id, rows, row)
    if moved is not None:
        return _finding(
            log,
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
                log, "altered", aggregate_id, row.version, "chain value edited; the event is intact"
            )
    return _finding(
        log,
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


def _finding(log: str, kind: Kind, aggregate_id: UUID, version: int, detail: str) -> Finding:
    return Finding(log=log, kind=kind, aggregate_id=aggregate_id, version=version, detail=detail)


def _aggregates(
    conn: psycopg.Connection[Any], schema: str, table: str
) -> Iterator[tuple[UUID, list[StoredRow]]]:
    """Each aggregate's rows in version order, streamed through a server-side cursor."""
    statement = sql.SQL(
        "SELECT originator_id, originator_version, topic, state, chain FROM {}.{}"
        " ORDER BY originator_id, originator_version"
    ).format(sql.Identifier(schema), sql.Identifier(table))
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
    conn: psycopg.Connection[Any], schema: str, table: str, after: int, until: int
) -> Generator[tuple[int, bytes]]:
    """(position, chain) of the table's events in (after, until], in notification order."""
    statement = sql.SQL(
        "SELECT notification_id, chain FROM {}.{}"
        " WHERE notification_id > %s AND notification_id <= %s ORDER BY notification_id"
    ).format(sql.Identifier(schema), sql.Identifier(table))
    with conn.cursor(name="hes_audit_chains") as cursor:
        cursor.itersize = _FETCH
        cursor.execute(statement, (after, until))
        for position, chain in cursor:
            yield int(position), b"" if chain is None else bytes(chain)


def _check_checkpoints(
    conn: psycopg.Connection[Any], schema: str, log: str, anchors: dict[int, bytes]
) -> tuple[int, int, list[Finding]]:
    """(checkpoints, last position, findings) of one log: its first checkpoint that fails."""
    stored = conn.execute(
        sql.SQL(
            "SELECT position, events, digest FROM {}.audit_checkpoints WHERE log = %s"
            " ORDER BY position"
        ).format(sql.Identifier(schema)),
        (log,),
    ).fetchall()
    findings: list[Finding] = []
    positions = {int(p) for p, _, _ in stored}
    for position in sorted(anchors):
        if position not in positions:
            findings.append(
                Finding(
                    log=log,
                    kind="checkpoint",
                    position=position,
                    detail="anchored checkpoint is missing from the database",
                )
            )
    if not stored:
        return 0, 0, findings
    last = int(stored[-1][0])
    chains = _chains(conn, schema, events_table(log), 0, last)
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
            findings.append(
                Finding(log=log, kind="checkpoint", position=int(position), detail=problem)
            )
            break
        previous, prev_digest = int(position), recomputed
    chains.close()
    return len(stored), last, findings
