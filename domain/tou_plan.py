"""TOU plans: the time-of-use calendar of a tariff plan, as numbered versions."""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import Collector, NotFound
from domain.idempotency import RemembersCommands
from domain.meta import EventMeta
from domain.text import check_text
from domain.tou_calendar import TouCalendar

TOU_PLAN_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:tou-plan")


def tou_plan_id(tariff_plan: str) -> UUID:
    """Deterministic id of the TOU plan of a tariff plan (one per tariff plan name)."""
    return uuid5(TOU_PLAN_NAMESPACE, tariff_plan.strip())


def check_tariff_plan(tariff_plan: str) -> None:
    """Raise ``ValidationFailed`` unless ``tariff_plan`` is a tariff plan name as customers have."""
    errors = Collector()
    check_text(errors, "tariffPlan", tariff_plan, max_chars=64)
    errors.raise_if_any()


class TouPlan(Aggregate, RemembersCommands):
    """The calendar of a tariff plan; every change is a new version, older ones stay."""

    class Created(Aggregate.Created):
        """The tariff plan got its first calendar (version 1)."""

        tariff_plan: str
        calendar: TouCalendar
        meta: EventMeta

    class Revised(Aggregate.Event):
        """The tariff plan's calendar changed: version ``number``."""

        number: int
        calendar: TouCalendar
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Add the version."""
            aggregate.versions.append(self.calendar)
            aggregate.remember(self.meta)

    @staticmethod
    def create_id(tariff_plan: str, calendar: TouCalendar, meta: EventMeta) -> UUID:
        """Derive the id from the tariff plan's name."""
        return tou_plan_id(tariff_plan)

    @classmethod
    def create(cls, tariff_plan: str, calendar: TouCalendar, meta: EventMeta) -> TouPlan:
        """A new TOU plan after checking the tariff plan name and the calendar."""
        check_tariff_plan(tariff_plan)
        calendar.check()
        return cls(tariff_plan=tariff_plan.strip(), calendar=calendar, meta=meta)

    @event(Created)
    def __init__(self, tariff_plan: str, calendar: TouCalendar, meta: EventMeta) -> None:
        self.tariff_plan = tariff_plan
        self.versions: list[TouCalendar] = [calendar]
        self.commands: dict[str, str | None] = {}
        self.remember(meta)

    @property
    def latest(self) -> int:
        """The number of the latest version."""
        return len(self.versions)

    def revise(self, calendar: TouCalendar, meta: EventMeta) -> bool:
        """Add a version with ``calendar``; False when it equals the latest one."""
        calendar.check()
        if calendar == self.versions[-1]:
            return False
        self.trigger_event(self.Revised, number=self.latest + 1, calendar=calendar, meta=meta)
        return True

    def calendar(self, version: int) -> TouCalendar:
        """The calendar of version ``version``, or ``NotFound``."""
        if not 1 <= version <= len(self.versions):
            raise NotFound(f"TOU plan {self.tariff_plan} has no version {version}")
        return self.versions[version - 1]
