"""SIM inventory commands: load a SimCard (and a meter's slot), act, save; idempotent, stamped."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, Mapper
from eventsourcing.postgres import PostgresAggregateRecorder
from psycopg import sql

from commands.codec import MsgspecMapper
from commands.concurrency import Save, last_position, save_with_retry
from commands.context import CommandContext
from commands.meters import MeterRegistry
from commands.policy import authorize
from domain.errors import Collector, Conflict, NotFound
from domain.meta import EventMeta
from domain.meter import meter_id
from domain.sim_card import MeterSimSlot, SimCard, require_iccid, sim_id, slot_id
from domain.sim_rules import SimSpec, SimStatus
from domain.values import MeterStatus, camel, check_serial

IMPORT_SUSPEND_REASON = "imported as suspended"
IMPORT_TERMINATE_REASON = "imported as terminated"


class SimOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a command did: the card as it now is and where its last event sits."""

    sim: SimCard
    notification_id: int | None
    """Position of the last recorded event; ``None`` when nothing new was recorded."""
    replayed: bool = False
    changed: bool = True


class SimImportRow(msgspec.Struct, frozen=True, kw_only=True):
    """One card of a bulk import: its fields and the status it should have."""

    spec: SimSpec
    status: SimStatus


class SimImportResult(msgspec.Struct, frozen=True, kw_only=True):
    """What happened to one card of a bulk import."""

    iccid: str
    status: str  # "created" | "unchanged" | "conflict"
    message: str = ""


class SimInventory(Application[UUID]):
    """The write side of the SIM inventory: cards and the meters they sit in."""

    name = "sims"

    def construct_mapper(self) -> Mapper[UUID]:
        """Encode events with msgspec instead of the library's JSON transcoder."""
        return MsgspecMapper()

    def get(self, iccid: str) -> SimCard:
        """Load a card by ICCID; ``ValidationFailed`` for a malformed one, else ``NotFound``."""
        normalized = require_iccid(iccid)
        try:
            card: SimCard = self.repository.get(sim_id(normalized))
        except AggregateNotFoundError:
            raise NotFound(f"no SIM card with ICCID {normalized}") from None
        return card

    def slot(self, meter_serial: str) -> MeterSimSlot | None:
        """The meter's SIM slot, or None when no SIM was ever installed in it."""
        try:
            found: MeterSimSlot = self.repository.get(slot_id(meter_serial))
        except AggregateNotFoundError:
            return None
        return found

    # -- commands ------------------------------------------------------------------

    def add_sim(self, spec: SimSpec, ctx: CommandContext) -> SimOutcome:
        """Add a card to the stock; its ICCID must not be known yet."""
        authorize(ctx.actor, "addSim")
        meta = ctx.meta("addSim", spec)
        spec.check()
        try:
            existing = self.get(spec.iccid)
        except NotFound:
            card = SimCard.add(spec, meta)
            try:
                recordings = self.save(card)
            except IntegrityError:
                existing = self.get(spec.iccid)
            else:
                return SimOutcome(sim=card, notification_id=last_position(recordings))
        if existing.seen(meta):
            return SimOutcome(sim=existing, notification_id=None, replayed=True)
        raise Conflict(f"SIM {existing.iccid} is already in the inventory")

    def update_sim(
        self,
        iccid: str,
        ctx: CommandContext,
        *,
        provider: str | None = None,
        apn: str | None = None,
        ip_address: str | None = None,
        data_limit_mb: int | None = None,
    ) -> SimOutcome:
        """Change a card's provider, APN, IP address or data limit (None keeps a field)."""
        authorize(ctx.actor, "updateSim")
        meta = ctx.meta("updateSim", iccid, provider, apn, ip_address, data_limit_mb)
        return self._update(
            iccid,
            meta,
            lambda s: s.update_service(
                meta,
                provider=provider,
                apn=apn,
                ip_address=ip_address,
                data_limit_mb=data_limit_mb,
            ),
        )

    def activate_sim(self, iccid: str, on: date | None, ctx: CommandContext) -> SimOutcome:
        """Put a card in stock into service (its activation date: ``on`` or today)."""
        authorize(ctx.actor, "activateSim")
        meta = ctx.meta("activateSim", iccid, on)
        return self._update(iccid, meta, lambda s: s.activate(meta, on))

    def suspend_sim(self, iccid: str, reason: str, ctx: CommandContext) -> SimOutcome:
        """Pause an active card's service."""
        authorize(ctx.actor, "suspendSim")
        meta = ctx.meta("suspendSim", iccid, reason)
        return self._update(iccid, meta, lambda s: s.suspend(reason, meta))

    def resume_sim(self, iccid: str, ctx: CommandContext) -> SimOutcome:
        """Bring a suspended card back into service."""
        authorize(ctx.actor, "resumeSim")
        meta = ctx.meta("resumeSim", iccid)
        return self._update(iccid, meta, lambda s: s.resume(meta))

    def terminate_sim(self, iccid: str, reason: str, ctx: CommandContext) -> SimOutcome:
        """End a card's service for good (refused while it sits in a meter)."""
        authorize(ctx.actor, "terminateSim")
        meta = ctx.meta("terminateSim", iccid, reason)
        return self._update(iccid, meta, lambda s: s.terminate(reason, meta))

    def install_sim(
        self, meters: MeterRegistry, meter_serial: str, iccid: str, ctx: CommandContext
    ) -> SimOutcome:
        """Put an active card into a meter in service: one SIM per meter, one meter per SIM."""
        authorize(ctx.actor, "installSim")
        _require_serial(meter_serial)
        normalized = require_iccid(iccid)
        meter = meters.get(meter_id(meter_serial))
        if meter.status is MeterStatus.DECOMMISSIONED:
            raise Conflict(f"meter {meter.spec.serial} is decommissioned: no SIM can be installed")
        serial = meter.spec.serial
        meta = ctx.meta("installSim", serial.upper(), normalized)

        def attempt() -> SimOutcome | Save[SimOutcome]:
            card = self.get(normalized)
            slot = self.slot(serial) or MeterSimSlot(meter_serial=serial, meta=meta)
            if card.seen(meta) or slot.seen(meta):
                return SimOutcome(sim=card, notification_id=None, replayed=True)
            changed = card.install(serial, meta)
            slot.hold(card.iccid, meta)
            if not changed:
                return SimOutcome(sim=card, notification_id=None, changed=False)
            return Save(
                (card, slot), lambda r: SimOutcome(sim=card, notification_id=last_position(r))
            )

        return save_with_retry(
            self, attempt, f"SIM {normalized} or meter {serial} is changing too fast; try again"
        )

    def remove_sim(self, meter_serial: str, reason: str, ctx: CommandContext) -> SimOutcome:
        """Take the card out of a meter; the card stays in its state, ready for another meter."""
        authorize(ctx.actor, "removeSim")
        _require_serial(meter_serial)
        meta = ctx.meta("removeSim", meter_serial.strip().upper(), reason)

        def attempt() -> SimOutcome | Save[SimOutcome]:
            slot = self.slot(meter_serial)
            if slot is None:
                raise Conflict(f"meter {meter_serial} has no SIM installed")
            if slot.seen(meta):
                removed = slot.last_removed or slot.iccid
                assert removed is not None  # a seen removal recorded one
                return SimOutcome(sim=self.get(removed), notification_id=None, replayed=True)
            iccid = slot.release(reason, meta)
            card = self.get(iccid)
            card.remove(reason, meta)
            return Save(
                (slot, card), lambda r: SimOutcome(sim=card, notification_id=last_position(r))
            )

        return save_with_retry(self, attempt, f"meter {meter_serial} is changing too fast")

    def import_sims(
        self, rows: list[SimImportRow], ctx: CommandContext
    ) -> tuple[list[SimImportResult], int | None]:
        """Add many cards (each brought to its status) in one transaction; skip identical ones."""
        authorize(ctx.actor, "importSims")
        results: list[SimImportResult] = []
        new: list[SimCard] = []
        seen: set[UUID] = set()
        specs = [row.spec.normalized() for row in rows]
        known = self._recorded({sim_id(spec.iccid) for spec in specs})
        for row, spec in zip(rows, specs, strict=True):
            id_ = sim_id(spec.iccid)
            if id_ in seen:
                results.append(_conflict(spec, "ICCID appears earlier in the same import"))
                continue
            seen.add(id_)
            try:
                if id_ not in known:
                    raise AggregateNotFoundError(id_)
                existing: SimCard = self.repository.get(id_)
            except AggregateNotFoundError:
                meta = ctx.meta("importSims", spec, row.status)
                new.append(_imported(spec, row.status, meta))
                results.append(SimImportResult(iccid=spec.iccid, status="created"))
                continue
            different = _differences(existing, spec, row.status)
            if different:
                message = "already in the inventory with different " + ", ".join(different)
                results.append(_conflict(spec, message))
            else:
                results.append(SimImportResult(iccid=spec.iccid, status="unchanged"))
        if not new:
            return results, None
        try:
            return results, last_position(self.save(*new))
        except IntegrityError:
            return self._save_one_by_one(new, results)

    # -- plumbing ------------------------------------------------------------------

    def _update(self, iccid: str, meta: EventMeta, action: Callable[[SimCard], bool]) -> SimOutcome:
        def attempt() -> SimOutcome | Save[SimOutcome]:
            card = self.get(iccid)
            if card.seen(meta):
                return SimOutcome(sim=card, notification_id=None, replayed=True)
            if not action(card):
                return SimOutcome(sim=card, notification_id=None, changed=False)
            return Save((card,), lambda r: SimOutcome(sim=card, notification_id=last_position(r)))

        return save_with_retry(self, attempt, f"SIM {iccid} is changing too fast; try again")

    def _recorded(self, ids: set[UUID]) -> set[UUID]:
        """Which of ``ids`` have events in the log (one query instead of one per card)."""
        recorder = self.recorder
        if not isinstance(recorder, PostgresAggregateRecorder):
            return ids  # other stores: every card is looked up on its own
        query = sql.SQL("SELECT DISTINCT originator_id FROM {}.{} WHERE originator_id = ANY(%s)")
        statement = query.format(
            sql.Identifier(recorder.datastore.schema), sql.Identifier(recorder.events_table_name)
        )
        with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(statement, (list(ids),))
            return {row["originator_id"] for row in cursor.fetchall()}

    def _save_one_by_one(
        self, new: list[SimCard], results: list[SimImportResult]
    ) -> tuple[list[SimImportResult], int | None]:
        last: int | None = None
        index = {r.iccid: i for i, r in enumerate(results)}
        for card in new:
            try:
                last = last_position(self.save(card)) or last
            except IntegrityError:
                results[index[card.iccid]] = _conflict(
                    card.spec, "added concurrently by another request"
                )
        return results, last


def _imported(spec: SimSpec, status: SimStatus, meta: EventMeta) -> SimCard:
    """A new card brought from stock to the imported status through the lifecycle's events."""
    card = SimCard.add(spec, meta)
    if status is not SimStatus.IN_STOCK and status is not SimStatus.TERMINATED:
        card.activate(meta, spec.activation_date)
    if status is SimStatus.SUSPENDED:
        card.suspend(IMPORT_SUSPEND_REASON, meta)
    elif status is SimStatus.TERMINATED:
        card.terminate(IMPORT_TERMINATE_REASON, meta)
    return card


def _differences(card: SimCard, spec: SimSpec, status: SimStatus) -> list[str]:
    """The columns in which an imported row disagrees with the card as it now is."""
    current = msgspec.structs.replace(
        card.spec,
        provider=card.provider,
        apn=card.apn,
        ip_address=card.ip_address,
        data_limit_mb=card.data_limit_mb,
        activation_date=card.activation_date,
    )
    old = msgspec.structs.asdict(current)
    fields = [
        k
        for k, v in msgspec.structs.asdict(spec).items()
        if old.get(k) != v and not (k == "activation_date" and v is None)
    ]
    names = [{"data_limit_mb": "dataLimit"}.get(f, camel(f)) for f in fields]
    if card.status is not status:
        names.append("status")
    return names


def _conflict(spec: SimSpec, message: str) -> SimImportResult:
    return SimImportResult(iccid=spec.iccid, status="conflict", message=message)


def _require_serial(serial: str) -> None:
    """Refuse a meter serial that breaks the serial rule before it names an aggregate."""
    errors = Collector()
    check_serial(errors, "meterSerial", serial)
    errors.raise_if_any()
