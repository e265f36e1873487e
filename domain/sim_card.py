"""The SimCard aggregate and a meter's SIM slot: the SIM inventory as immutable events.

A SIM is installed in a meter by recording ``SimCard.Installed`` and ``MeterSimSlot.SimInstalled``
in one save: the card holds its meter (one meter per SIM), the meter's slot holds its card (one SIM
per meter), and optimistic concurrency on both makes concurrent installations exclusive.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import Collector, Conflict
from domain.idempotency import RemembersCommands
from domain.meta import EventMeta
from domain.sim_rules import (
    TRANSITIONS,
    SimSpec,
    SimStatus,
    canonical_ip,
    check_iccid,
    check_service,
    normalize_iccid,
)
from domain.text import check_text

SIM_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:sim-card")
SLOT_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:meter-sim-slot")


def sim_id(iccid: str) -> UUID:
    """Deterministic aggregate id of the SIM card with this ICCID."""
    return uuid5(SIM_NAMESPACE, normalize_iccid(iccid))


def slot_id(meter_serial: str) -> UUID:
    """Deterministic aggregate id of a meter's SIM slot (serial case-insensitive, as meters)."""
    return uuid5(SLOT_NAMESPACE, meter_serial.strip().upper())


def require_iccid(iccid: str) -> str:
    """The normalized ICCID, or ``ValidationFailed`` naming the broken rule."""
    errors = Collector()
    check_iccid(errors, iccid)
    errors.raise_if_any()
    return normalize_iccid(iccid)


class SimCard(Aggregate, RemembersCommands):
    """A SIM card of the inventory, from stock to termination, and the meter it sits in."""

    class AddedToStock(Aggregate.Created):
        """A SIM card entered the inventory (in stock)."""

        spec: SimSpec
        meta: EventMeta

    class ServiceUpdated(Aggregate.Event):
        """The card's provider, APN, IP address or data limit changed (all four as they now are)."""

        provider: str
        apn: str | None
        ip_address: str | None
        data_limit_mb: int | None
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Adopt the new service fields."""
            aggregate.provider = self.provider
            aggregate.apn = self.apn
            aggregate.ip_address = self.ip_address
            aggregate.data_limit_mb = self.data_limit_mb
            aggregate.remember(self.meta)

    class Activated(Aggregate.Event):
        """The card went into service (from stock, or back from suspension)."""

        previous: SimStatus
        activation_date: date
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the card active."""
            aggregate.status = SimStatus.ACTIVE
            aggregate.activation_date = self.activation_date
            aggregate.remember(self.meta)

    class Suspended(Aggregate.Event):
        """The card's service was paused."""

        reason: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the card suspended."""
            aggregate.status = SimStatus.SUSPENDED
            aggregate.remember(self.meta)

    class Terminated(Aggregate.Event):
        """The card's service ended for good."""

        previous: SimStatus
        reason: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the card terminated."""
            aggregate.status = SimStatus.TERMINATED
            aggregate.remember(self.meta)

    class Installed(Aggregate.Event):
        """The card was put into a meter."""

        meter_serial: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Point the card at its meter."""
            aggregate.meter_serial = self.meter_serial
            aggregate.remember(self.meta)

    class Removed(Aggregate.Event):
        """The card was taken out of its meter."""

        meter_serial: str
        reason: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Clear the card's meter."""
            aggregate.meter_serial = None
            aggregate.remember(self.meta)

    @staticmethod
    def create_id(spec: SimSpec, meta: EventMeta) -> UUID:
        """Derive the aggregate id from the ICCID, so each card has one aggregate."""
        return sim_id(spec.iccid)

    @classmethod
    def add(cls, spec: SimSpec, meta: EventMeta) -> SimCard:
        """A card in stock after checking its fields."""
        spec.check()
        return cls(spec=spec.normalized(), meta=meta)

    @event(AddedToStock)
    def __init__(self, spec: SimSpec, meta: EventMeta) -> None:
        self.spec = spec
        self.provider = spec.provider
        self.apn = spec.apn
        self.ip_address = spec.ip_address
        self.data_limit_mb = spec.data_limit_mb
        self.activation_date: date | None = spec.activation_date
        self.status = SimStatus.IN_STOCK
        self.meter_serial: str | None = None
        self.commands: dict[str, str | None] = {}
        self.remember(meta)

    @property
    def iccid(self) -> str:
        """The card's ICCID (its identity)."""
        return self.spec.iccid

    def update_service(
        self,
        meta: EventMeta,
        *,
        provider: str | None = None,
        apn: str | None = None,
        ip_address: str | None = None,
        data_limit_mb: int | None = None,
    ) -> bool:
        """Change the given service fields (None keeps one); False when nothing changes."""
        self._refuse_when_terminated("update")
        new_provider = self.provider if provider is None else provider.strip()
        new_apn = self.apn if apn is None else apn
        new_ip = self.ip_address if ip_address is None else canonical_ip(ip_address)
        new_limit = self.data_limit_mb if data_limit_mb is None else data_limit_mb
        errors = Collector()
        check_service(
            errors, provider=new_provider, apn=new_apn, ip_address=new_ip, data_limit_mb=new_limit
        )
        errors.raise_if_any()
        if (new_provider, new_apn, new_ip, new_limit) == (
            self.provider,
            self.apn,
            self.ip_address,
            self.data_limit_mb,
        ):
            return False
        self.trigger_event(
            self.ServiceUpdated,
            provider=new_provider,
            apn=new_apn,
            ip_address=new_ip,
            data_limit_mb=new_limit,
            meta=meta,
        )
        return True

    def activate(self, meta: EventMeta, on: date | None = None) -> bool:
        """Put the card into service; False when it already is active."""
        if self.status is SimStatus.ACTIVE:
            return False
        self._require_transition(SimStatus.ACTIVE, "activate")
        first = on or self.activation_date or date.today()
        self.trigger_event(self.Activated, previous=self.status, activation_date=first, meta=meta)
        return True

    def suspend(self, reason: str, meta: EventMeta) -> bool:
        """Pause the card's service; False when it already is suspended."""
        _check_reason(reason)
        if self.status is SimStatus.SUSPENDED:
            return False
        self._require_transition(SimStatus.SUSPENDED, "suspend")
        self.trigger_event(self.Suspended, reason=reason, meta=meta)
        return True

    def resume(self, meta: EventMeta) -> bool:
        """Bring a suspended card back into service; False when it already is active."""
        if self.status is SimStatus.ACTIVE:
            return False
        if self.status is not SimStatus.SUSPENDED:
            raise _illegal(self, SimStatus.ACTIVE, "resume")
        self.trigger_event(
            self.Activated,
            previous=self.status,
            activation_date=self.activation_date or date.today(),
            meta=meta,
        )
        return True

    def terminate(self, reason: str, meta: EventMeta) -> bool:
        """End the card's service for good; refused while it sits in a meter."""
        _check_reason(reason)
        if self.status is SimStatus.TERMINATED:
            return False
        if self.meter_serial is not None:
            raise Conflict(
                f"SIM {self.iccid} is installed in meter {self.meter_serial}: remove it first"
            )
        self._require_transition(SimStatus.TERMINATED, "terminate")
        self.trigger_event(self.Terminated, previous=self.status, reason=reason, meta=meta)
        return True

    def install(self, meter_serial: str, meta: EventMeta) -> bool:
        """Put the card into a meter; only an active card not in another meter may go in."""
        if self.meter_serial is not None and self.meter_serial.upper() == meter_serial.upper():
            return False
        if self.meter_serial is not None:
            raise Conflict(
                f"SIM {self.iccid} is already installed in meter {self.meter_serial}: "
                "remove it from there first"
            )
        if self.status is not SimStatus.ACTIVE:
            hint = {
                SimStatus.IN_STOCK: "activate it first",
                SimStatus.SUSPENDED: "resume it first",
                SimStatus.TERMINATED: "a terminated SIM never returns to service",
            }[self.status]
            raise Conflict(
                f"SIM {self.iccid} is {self.status.value.lower()}: only an active SIM can be "
                f"installed ({hint})"
            )
        self.trigger_event(self.Installed, meter_serial=meter_serial, meta=meta)
        return True

    def remove(self, reason: str, meta: EventMeta) -> None:
        """Take the card out of its meter (the caller checked it is in one)."""
        assert self.meter_serial is not None
        self.trigger_event(self.Removed, meter_serial=self.meter_serial, reason=reason, meta=meta)

    def _require_transition(self, target: SimStatus, verb: str) -> None:
        if target not in TRANSITIONS[self.status]:
            raise _illegal(self, target, verb)

    def _refuse_when_terminated(self, verb: str) -> None:
        if self.status is SimStatus.TERMINATED:
            raise Conflict(f"cannot {verb} SIM {self.iccid}: it is terminated (final state)")


class MeterSimSlot(Aggregate, RemembersCommands):
    """The SIM slot of one meter: which card (if any) sits in it."""

    class Created(Aggregate.Created):
        """The meter's slot was first used."""

        meter_serial: str
        meta: EventMeta

    class SimInstalled(Aggregate.Event):
        """A card was put into the meter."""

        iccid: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Hold the card."""
            aggregate.iccid = self.iccid
            aggregate.remember(self.meta)

    class SimRemoved(Aggregate.Event):
        """The card was taken out of the meter."""

        iccid: str
        reason: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Empty the slot."""
            aggregate.iccid = None
            aggregate.last_removed = self.iccid
            aggregate.remember(self.meta)

    @staticmethod
    def create_id(meter_serial: str, meta: EventMeta) -> UUID:
        """Derive the aggregate id from the meter's serial, so each meter has one slot."""
        return slot_id(meter_serial)

    @event(Created)
    def __init__(self, meter_serial: str, meta: EventMeta) -> None:
        self.meter_serial = meter_serial
        self.iccid: str | None = None
        self.last_removed: str | None = None
        self.commands: dict[str, str | None] = {}
        self.remember(meta)

    def hold(self, iccid: str, meta: EventMeta) -> None:
        """Take the card in; refused when another card sits in the meter."""
        if self.iccid is not None and self.iccid != iccid:
            raise Conflict(
                f"meter {self.meter_serial} already has SIM {self.iccid}: remove it first"
            )
        if self.iccid is None:
            self.trigger_event(self.SimInstalled, iccid=iccid, meta=meta)

    def release(self, reason: str, meta: EventMeta) -> str:
        """Empty the slot and return the ICCID that was in it."""
        if self.iccid is None:
            raise Conflict(f"meter {self.meter_serial} has no SIM installed")
        iccid = self.iccid
        self.trigger_event(self.SimRemoved, iccid=iccid, reason=reason, meta=meta)
        return iccid


def _check_reason(reason: str) -> None:
    errors = Collector()
    check_text(errors, "reason", reason, max_chars=500, multiline=True)
    errors.raise_if_any()


def _illegal(card: SimCard, target: SimStatus, verb: str) -> Conflict:
    return Conflict(
        f"cannot {verb} SIM {card.iccid}: {card.status.value} → {target.value} is not an "
        f"allowed transition"
    )
