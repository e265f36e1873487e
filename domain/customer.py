"""The Customer aggregate: an account, its personal data (sealed) and its lifecycle, as events."""

from __future__ import annotations

import enum
from datetime import date
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.domain import Aggregate, event

from domain.errors import Collector, Conflict
from domain.idempotency import RemembersCommands
from domain.meta import EventMeta
from domain.personal_data import PersonalData, open_or_erased, seal
from domain.text import NAME_RE, NAME_RULE, check_identifier, check_text
from domain.values import check_account

CUSTOMER_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:customer")


def customer_id(account: str) -> UUID:
    """Deterministic aggregate id of an account number (trimmed, case kept): one per account."""
    return uuid5(CUSTOMER_NAMESPACE, account.strip())


class CustomerType(enum.StrEnum):
    """What kind of supply the customer takes."""

    RESIDENTIAL = "residential"
    COMMERCIAL = "commercial"
    INDUSTRIAL = "industrial"
    AGRICULTURAL = "agricultural"
    PUBLIC = "public"


class CustomerStatus(enum.StrEnum):
    """Lifecycle of a customer account."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


class CustomerProfile(msgspec.Struct, frozen=True, kw_only=True):
    """A customer's fields that are not personal data (kept in clear)."""

    area: str
    customer_type: CustomerType = CustomerType.RESIDENTIAL
    tariff_plan: str = "standard"
    connection_date: date | None = None

    def check(self, errors: Collector) -> None:
        """Record every broken rule of the profile's fields."""
        check_identifier(errors, "area", self.area, NAME_RE, NAME_RULE)
        check_identifier(errors, "tariffPlan", self.tariff_plan, NAME_RE, NAME_RULE)


def check_reason(errors: Collector, reason: str) -> None:
    """Record the broken rules of a reason (1..500 characters, multi-line free text)."""
    check_text(errors, "reason", reason, max_chars=500, multiline=True)


class Customer(Aggregate, RemembersCommands):
    """A customer account; its personal data only ever sealed under its own data key."""

    class Created(Aggregate.Created):
        """A customer account was opened (personal data sealed)."""

        account: str
        sealed: str
        profile: CustomerProfile
        meta: EventMeta

    class ContactChanged(Aggregate.Event):
        """Name, address, phone or e-mail changed (sealed), or the area."""

        sealed: str
        area: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Adopt the new sealed contact data and area."""
            aggregate.sealed = self.sealed
            aggregate.profile = msgspec.structs.replace(aggregate.profile, area=self.area)
            aggregate.remember(self.meta)

    class PlanChanged(Aggregate.Event):
        """The customer type or tariff plan changed."""

        customer_type: CustomerType
        tariff_plan: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Adopt the new type and plan."""
            aggregate.profile = msgspec.structs.replace(
                aggregate.profile, customer_type=self.customer_type, tariff_plan=self.tariff_plan
            )
            aggregate.remember(self.meta)

    class Suspended(Aggregate.Event):
        """The account was suspended (meters may no longer be assigned to it)."""

        reason: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the account suspended."""
            aggregate.status = CustomerStatus.SUSPENDED
            aggregate.remember(self.meta)

    class Reactivated(Aggregate.Event):
        """A suspended account is active again."""

        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the account active."""
            aggregate.status = CustomerStatus.ACTIVE
            aggregate.remember(self.meta)

    class Closed(Aggregate.Event):
        """The account was closed for good; ``meters_unassigned`` meters were let go with it."""

        reason: str
        meters_unassigned: int
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the account closed."""
            aggregate.status = CustomerStatus.CLOSED
            aggregate.remember(self.meta)

    class Erased(Aggregate.Event):
        """The customer's personal data was erased: its data key is destroyed."""

        reason: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the personal data erased (and the account closed)."""
            aggregate.erased = True
            aggregate.status = CustomerStatus.CLOSED
            aggregate.remember(self.meta)

    @staticmethod
    def create_id(account: str) -> UUID:
        """Derive the aggregate id from the account number, so each account is unique."""
        return customer_id(account)

    @classmethod
    def open(
        cls,
        account: str,
        personal: PersonalData,
        profile: CustomerProfile,
        data_key: bytes,
        meta: EventMeta,
    ) -> Customer:
        """A new active customer after checking every field; personal data sealed."""
        errors = Collector()
        check_account(errors, "accountNumber", account)
        personal.check(errors)
        profile.check(errors)
        errors.raise_if_any()
        return cls(
            account=account, sealed=seal(data_key, account, personal), profile=profile, meta=meta
        )

    @event(Created)
    def __init__(
        self, account: str, sealed: str, profile: CustomerProfile, meta: EventMeta
    ) -> None:
        self.account = account
        self.sealed = sealed
        self.profile = profile
        self.status = CustomerStatus.ACTIVE
        self.erased = False
        self.commands: dict[str, str | None] = {}
        self.remember(meta)

    def personal(self, data_key: bytes | None) -> PersonalData:
        """The personal data, or every field shown as erased when the key is gone."""
        return open_or_erased(None if self.erased else data_key, self.account, self.sealed)

    def update_contact(
        self, personal: PersonalData, area: str, data_key: bytes, meta: EventMeta
    ) -> bool:
        """Change name, address, phone, e-mail or area; False when nothing differs."""
        self._ensure_open("update the contact data of")
        errors = Collector()
        personal.check(errors)
        check_identifier(errors, "area", area, NAME_RE, NAME_RULE)
        errors.raise_if_any()
        if self.personal(data_key) == personal and self.profile.area == area:
            return False
        self.trigger_event(
            self.ContactChanged, sealed=seal(data_key, self.account, personal), area=area, meta=meta
        )
        return True

    def change_plan(self, customer_type: CustomerType, tariff_plan: str, meta: EventMeta) -> bool:
        """Change the customer type or tariff plan; False when both already are these."""
        self._ensure_open("change the plan of")
        errors = Collector()
        check_identifier(errors, "tariffPlan", tariff_plan, NAME_RE, NAME_RULE)
        errors.raise_if_any()
        if (customer_type, tariff_plan) == (self.profile.customer_type, self.profile.tariff_plan):
            return False
        self.trigger_event(
            self.PlanChanged, customer_type=customer_type, tariff_plan=tariff_plan, meta=meta
        )
        return True

    def suspend(self, reason: str, meta: EventMeta) -> None:
        """Suspend an active account."""
        if self.status is not CustomerStatus.ACTIVE:
            raise Conflict(
                f"customer {self.account} is {self.status}, only active can be suspended"
            )
        errors = Collector()
        check_reason(errors, reason)
        errors.raise_if_any()
        self.trigger_event(self.Suspended, reason=reason, meta=meta)

    def reactivate(self, meta: EventMeta) -> None:
        """Make a suspended account active again."""
        if self.status is not CustomerStatus.SUSPENDED:
            raise Conflict(
                f"customer {self.account} is {self.status}, only suspended can be reactivated"
            )
        self.trigger_event(self.Reactivated, meta=meta)

    def close(self, reason: str, meters_unassigned: int, meta: EventMeta) -> None:
        """Close the account for good (its meters must have been unassigned)."""
        self._ensure_open("close")
        errors = Collector()
        check_reason(errors, reason)
        errors.raise_if_any()
        self.trigger_event(
            self.Closed, reason=reason, meters_unassigned=meters_unassigned, meta=meta
        )

    def erase(self, reason: str, meta: EventMeta) -> bool:
        """Record the erasure of the personal data (closing the account); False if done before."""
        if self.erased:
            return False
        errors = Collector()
        check_reason(errors, reason)
        errors.raise_if_any()
        self.trigger_event(self.Erased, reason=reason, meta=meta)
        return True

    def _ensure_open(self, action: str) -> None:
        if self.status is CustomerStatus.CLOSED:
            raise Conflict(f"cannot {action} customer {self.account}: the account is closed")
