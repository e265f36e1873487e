"""Read-side queries of the DLMS read models: remote commands, meter state, communication,
logged meter events and the load-profile ledger."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from domain.association_view import AssociationView, CosemObject
from domain.profile_ledger import LedgerDay, counts, mask_of
from domain.remote_commands import CommandArgs, CommandKind, CommandResult, CommandStatus
from domain.values import ConnectionProfile
from projections.projection_position import poll_until

MAX_ROWS = 500


class RemoteCommandRow(msgspec.Struct, frozen=True, kw_only=True):
    """A remote command as the read model shows it."""

    command_id: UUID
    meter_id: UUID
    kind: CommandKind
    args: CommandArgs
    status: CommandStatus
    attempt: int
    requested_by: str
    requested_at: datetime
    sent_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None
    result: CommandResult | None = None
    updated_at: datetime
    meter_version: int


class CommunicationRow(msgspec.Struct, frozen=True, kw_only=True):
    """A meter's DLMS session statistics."""

    meter_id: UUID
    attempts: int
    successes: int
    consecutive_failures: int
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None

    @property
    def success_rate(self) -> float | None:
        """Successful share of attempts (None before the first attempt)."""
        return self.successes / self.attempts if self.attempts else None


class DlmsStateRow(msgspec.Struct, frozen=True, kw_only=True):
    """Relay state (from confirmed read-back), key version and event-log counters."""

    meter_id: UUID
    relay_connected: bool | None
    relay_changed_at: datetime | None
    key_version: int
    keys_changed_at: datetime | None
    events_logged: int
    last_event_at: datetime | None


class LogEventRow(msgspec.Struct, frozen=True, kw_only=True):
    """One event from a meter's event log."""

    log: str
    at: datetime
    code: int
    kind: str
    recorded_at: datetime


class LedgerDayRow(msgspec.Struct, frozen=True, kw_only=True):
    """One UTC day of a meter's load profile: expected, received, absent, missing intervals."""

    day: date
    period_s: int
    expected: int
    received: int
    absent: int

    @property
    def missing(self) -> int:
        """Due intervals neither received nor known absent (they will be read again)."""
        return self.expected - self.received - self.absent


class MeterModelRow(msgspec.Struct, frozen=True, kw_only=True):
    """What the DLMS side needs to know of a meter to show its capabilities."""

    meter_id: UUID
    serial: str
    manufacturer: str
    model: str
    firmware: str
    phases: int
    connection: ConnectionProfile
    profile: str | None = None
    profile_set_at: datetime | None = None
    counter_resyncs: int = 0
    counter_resynced_at: datetime | None = None
    counter_resync_strategy: str | None = None


class ModelViewRow(msgspec.Struct, frozen=True, kw_only=True):
    """The stored association view of a meter model for one client."""

    association_version: int | None
    objects: tuple[CosemObject, ...] | None
    error: str | None
    discovered_at: datetime
    serial: str | None

    @property
    def view(self) -> AssociationView | None:
        """The view (None when discovery failed)."""
        if self.objects is None:
            return None
        return AssociationView(version=self.association_version or 0, objects=self.objects)


class RegisterUnitRow(msgspec.Struct, frozen=True, kw_only=True):
    """A register's scaler and raw unit code as the meter reported them."""

    obis: str
    scaler: int | None
    unit_code: int | None
    verified: bool
    note: str | None
    seen_at: datetime


class TaskProblemRow(msgspec.Struct, frozen=True, kw_only=True):
    """What a task's last run did not read, per OBIS code."""

    step: str
    obis: str
    reason: str
    stored: bool = False


class CollectionTaskRow(msgspec.Struct, frozen=True, kw_only=True):
    """A collection task of a meter and how its last run went."""

    task: str
    next_due: datetime
    last_run_at: datetime | None
    lease_until: datetime | None = None
    last_ok_at: datetime | None
    failures: int
    last_status: str | None
    last_problems: tuple[TaskProblemRow, ...] | None
    last_error: str | None


class DlmsQueries:
    """Queries the DLMS read models through an async pool."""

    def __init__(self, pool: AsyncConnectionPool[Any], schema: str) -> None:
        self.pool = pool
        self.schema = sql.Identifier(schema)

    async def _rows(self, text: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        query = sql.SQL(text).format(s=self.schema)  # type: ignore[arg-type]
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            rows: list[dict[str, Any]] = await cur.fetchall()
        return rows

    async def commands(self, meter: UUID, first: int = 50) -> list[RemoteCommandRow]:
        """The meter's remote commands, newest first."""
        rows = await self._rows(
            "SELECT * FROM {s}.remote_commands WHERE meter_id = %s "
            "ORDER BY requested_at DESC, command_id LIMIT %s",
            (meter, max(1, min(first, MAX_ROWS))),
        )
        return [msgspec.convert(r, RemoteCommandRow, strict=False) for r in rows]

    async def command(self, command_id: UUID) -> RemoteCommandRow | None:
        """One remote command, or None."""
        rows = await self._rows(
            "SELECT * FROM {s}.remote_commands WHERE command_id = %s", (command_id,)
        )
        return msgspec.convert(rows[0], RemoteCommandRow, strict=False) if rows else None

    async def wait_for_command(
        self, command_id: UUID, meter_version: int, seconds: float, *, finished: bool = False
    ) -> RemoteCommandRow | None:
        """The command once the read model applied ``meter_version`` (or, with ``finished``,
        once it is CONFIRMED or FAILED); the last row seen when ``seconds`` run out."""

        def done(row: RemoteCommandRow | None) -> bool:
            if row is None or row.meter_version < meter_version:
                return False
            return not finished or row.status in (CommandStatus.CONFIRMED, CommandStatus.FAILED)

        return await poll_until(lambda: self.command(command_id), done, seconds)

    async def communication(self, meter: UUID) -> CommunicationRow | None:
        """The meter's session statistics (None before its first session)."""
        rows = await self._rows("SELECT * FROM {s}.dlms_comm_stats WHERE meter_id = %s", (meter,))
        return msgspec.convert(rows[0], CommunicationRow, strict=False) if rows else None

    async def state(self, meter: UUID) -> DlmsStateRow | None:
        """Relay and key state of the meter (None before any DLMS event)."""
        rows = await self._rows("SELECT * FROM {s}.dlms_meter_state WHERE meter_id = %s", (meter,))
        return msgspec.convert(rows[0], DlmsStateRow, strict=False) if rows else None

    async def log_events(self, meter: UUID, first: int = 100) -> list[LogEventRow]:
        """The meter's logged events, newest first."""
        rows = await self._rows(
            "SELECT log, at, code, kind, recorded_at FROM {s}.meter_log_events "
            "WHERE meter_id = %s ORDER BY at DESC, log, code LIMIT %s",
            (meter, max(1, min(first, MAX_ROWS))),
        )
        return [msgspec.convert(r, LogEventRow, strict=False) for r in rows]

    async def ledger(self, meter: UUID, profile: str, days: int) -> list[LedgerDayRow]:
        """The profile ledger of the last ``days`` UTC days, newest first."""
        now = datetime.now(UTC)
        since = (now - timedelta(days=days - 1)).date()
        rows = await self._rows(
            "SELECT day, period_s, received::text AS received, absent::text AS absent "
            "FROM {s}.dlms_profile_ledger WHERE meter_id = %s AND profile = %s AND day >= %s "
            "ORDER BY day DESC",
            (meter, profile, since),
        )
        out = []
        for r in rows:
            day = LedgerDay(
                day=r["day"],
                period_s=r["period_s"],
                received=mask_of(r["received"]),
                absent=mask_of(r["absent"]),
            )
            expected, received, absent = counts(day, now)
            out.append(
                LedgerDayRow(
                    day=day.day,
                    period_s=day.period_s,
                    expected=expected,
                    received=received,
                    absent=absent,
                )
            )
        return out

    async def meter_model(self, meter: UUID) -> MeterModelRow | None:
        """The meter's model, connection and DLMS profile state (None: no such meter)."""
        rows = await self._rows(
            "SELECT m.id AS meter_id, m.serial, m.manufacturer, m.model, m.firmware, m.phases, "
            "m.connection, d.profile, d.profile_set_at, COALESCE(d.counter_resyncs, 0) AS "
            "counter_resyncs, d.counter_resynced_at, d.counter_resync_strategy "
            "FROM {s}.meters m LEFT JOIN {s}.dlms_meter_state d ON d.meter_id = m.id "
            "WHERE m.id = %s",
            (meter,),
        )
        return msgspec.convert(rows[0], MeterModelRow, strict=False) if rows else None

    async def model_view(
        self, manufacturer: str, model: str, firmware: str, client: int
    ) -> ModelViewRow | None:
        """The stored association view of a model for a client (None: not discovered)."""
        rows = await self._rows(
            "SELECT association_version, objects, error, discovered_at, serial "
            "FROM {s}.dlms_model_views WHERE manufacturer = %s AND model = %s "
            "AND firmware = %s AND client_address = %s",
            (manufacturer.casefold(), model.casefold(), firmware, client),
        )
        return msgspec.convert(rows[0], ModelViewRow, strict=False) if rows else None

    async def register_units(self, meter: UUID) -> list[RegisterUnitRow]:
        """Each register's scaler and raw unit code as last read from the meter."""
        rows = await self._rows(
            "SELECT obis, scaler, unit_code, verified, note, seen_at "
            "FROM {s}.dlms_register_units WHERE meter_id = %s ORDER BY obis",
            (meter,),
        )
        return [msgspec.convert(r, RegisterUnitRow, strict=False) for r in rows]

    async def collection_tasks(self, meter: UUID) -> list[CollectionTaskRow]:
        """The meter's collection tasks and how each last ran."""
        rows = await self._rows(
            "SELECT task, next_due, lease_until, last_run_at, last_ok_at, failures, "
            "last_status, last_problems, last_error FROM {s}.dlms_collection_tasks "
            "WHERE meter_id = %s "
            "ORDER BY task",
            (meter,),
        )
        return [msgspec.convert(r, CollectionTaskRow, strict=False) for r in rows]
