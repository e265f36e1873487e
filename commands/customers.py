"""Customer commands: load a Customer, act, save; personal data sealed under its data key."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, Mapper

from commands.codec import MsgspecMapper
from commands.concurrency import Save, last_position, save_with_retry
from commands.context import CommandContext
from commands.policy import authorize
from domain.customer import (
    Customer,
    CustomerProfile,
    CustomerStatus,
    CustomerType,
    customer_id,
)
from domain.errors import Collector, Conflict, NotFound
from domain.meta import EventMeta
from domain.personal_data import PersonalData
from domain.values import check_account


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a command did: the customer as it now is and where its last event sits."""

    customer: Customer
    notification_id: int | None
    replayed: bool = False
    changed: bool = True


class NewCustomer(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that opens a customer account (a command's or an import row's input)."""

    account: str
    personal: PersonalData
    profile: CustomerProfile


class ImportRowResult(msgspec.Struct, frozen=True, kw_only=True):
    """What happened to one customer of a bulk import."""

    account: str
    status: str  # "created" | "unchanged" | "conflict"
    message: str = ""


class DataKeys(Protocol):
    """The customers' data keys, wrapped by the master key (``adapters.customer_keys``)."""

    def ensure(self, id_: UUID, account: str) -> bytes:
        """The customer's data key, created now unless it exists."""
        ...

    def get(self, id_: UUID, account: str) -> bytes | None:
        """The customer's data key, or None when it was destroyed (or never made)."""
        ...

    def destroy(self, id_: UUID) -> bool:
        """Delete the customer's data key; False when there was none."""
        ...

    def ensure_many(self, customers: list[tuple[UUID, str]]) -> dict[UUID, bytes]:
        """Data keys of many customers at once (created where missing), by customer id."""
        ...


DataKeysFactory = Callable[[Any], DataKeys]
"""Builds the key store on the application's own datastore (the composition root gives it)."""


class CustomerBook(Application[UUID]):
    """The write side of customer accounts; needs the master key for personal data."""

    name = "customers"

    def __init__(
        self, env: Mapping[str, str] | None = None, keys: DataKeysFactory | None = None
    ) -> None:
        super().__init__(env=env)
        self._make_keys = keys
        self._keys: DataKeys | None = None

    def construct_mapper(self) -> Mapper[UUID]:
        """Encode events with msgspec instead of the library's JSON transcoder."""
        return MsgspecMapper()

    @property
    def keys(self) -> DataKeys:
        """The data-key store (needs the master key this book was built with)."""
        if self._keys is None:
            if self._make_keys is None:
                raise RuntimeError("CustomerBook built without the customer master key")
            self._keys = self._make_keys(self.recorder.datastore)  # type: ignore[attr-defined]
        return self._keys

    # -- queries on the write model ------------------------------------------------

    def get(self, account: str) -> Customer:
        """Load a customer by account number or raise ``NotFound``."""
        errors = Collector()
        check_account(errors, "accountNumber", account)
        errors.raise_if_any()
        try:
            customer: Customer = self.repository.get(customer_id(account))
        except AggregateNotFoundError:
            raise NotFound(f"no customer with account {account!r}") from None
        return customer

    def personal(self, customer: Customer) -> PersonalData:
        """The customer's personal data, or every field shown as erased."""
        key = None if customer.erased else self.keys.get(customer.id, customer.account)
        return customer.personal(key)

    def require_active(self, account: str) -> Customer:
        """The customer if it exists and is active; ``NotFound`` / ``Conflict`` otherwise."""
        customer = self.get(account)
        if customer.status is not CustomerStatus.ACTIVE:
            raise Conflict(f"customer {account} is {customer.status}; meters go to active ones")
        return customer

    # -- commands ------------------------------------------------------------------

    def create_customer(self, new: NewCustomer, ctx: CommandContext) -> Outcome:
        """Open a customer account; its account number must not exist yet."""
        authorize(ctx.actor, "createCustomer")
        meta = ctx.meta("createCustomer", new)
        check_new(new)
        try:
            existing = self.get(new.account)
        except NotFound:
            id_ = customer_id(new.account)
            customer = Customer.open(
                new.account, new.personal, new.profile, self.keys.ensure(id_, new.account), meta
            )
            try:
                recordings = self.save(customer)
            except IntegrityError:
                existing = self.get(new.account)
            else:
                return Outcome(customer=customer, notification_id=last_position(recordings))
        if existing.seen(meta):
            return Outcome(customer=existing, notification_id=None, replayed=True)
        raise Conflict(f"account {new.account!r} already exists ({existing.id})")

    def update_contact(
        self, account: str, personal: PersonalData, area: str, ctx: CommandContext
    ) -> Outcome:
        """Change the customer's name, address, phone, e-mail or area."""
        authorize(ctx.actor, "updateCustomerContact")
        meta = ctx.meta("updateCustomerContact", account, personal, area)

        def act(c: Customer) -> bool:
            key = self.keys.get(c.id, c.account)
            if key is None or c.erased:
                raise Conflict(f"customer {account}: personal data was erased")
            return c.update_contact(personal, area, key, meta)

        return self._update(account, meta, act)

    def change_plan(
        self, account: str, customer_type: CustomerType, tariff_plan: str, ctx: CommandContext
    ) -> Outcome:
        """Change the customer's type or tariff plan."""
        authorize(ctx.actor, "changeCustomerPlan")
        meta = ctx.meta("changeCustomerPlan", account, customer_type, tariff_plan)
        return self._update(
            account, meta, lambda c: c.change_plan(customer_type, tariff_plan, meta)
        )

    def suspend_account(self, account: str, reason: str, ctx: CommandContext) -> Outcome:
        """Suspend an active customer."""
        authorize(ctx.actor, "suspendCustomer")
        meta = ctx.meta("suspendCustomer", account, reason)
        return self._update(account, meta, lambda c: c.suspend(reason, meta))

    def reactivate_account(self, account: str, ctx: CommandContext) -> Outcome:
        """Make a suspended customer active again."""
        authorize(ctx.actor, "reactivateCustomer")
        meta = ctx.meta("reactivateCustomer", account)
        return self._update(account, meta, lambda c: c.reactivate(meta))

    def close_account(
        self, account: str, reason: str, meters_unassigned: int, ctx: CommandContext
    ) -> Outcome:
        """Close the account (``commands.customer_links`` first checks or unassigns meters)."""
        authorize(ctx.actor, "closeCustomer")
        meta = ctx.meta("closeCustomer", account, reason)
        return self._update(account, meta, lambda c: c.close(reason, meters_unassigned, meta))

    def erase_account(self, account: str, reason: str, ctx: CommandContext) -> Outcome:
        """Record the erasure, then destroy the data key (again on a retry, if one is left)."""
        authorize(ctx.actor, "eraseCustomer")
        meta = ctx.meta("eraseCustomer", account, reason)
        outcome = self._update(account, meta, lambda c: c.erase(reason, meta))
        self.keys.destroy(outcome.customer.id)
        return outcome

    def import_customers(
        self, rows: list[NewCustomer], ctx: CommandContext
    ) -> tuple[list[ImportRowResult], int | None]:
        """Open many customers in one transaction; identical ones are reported unchanged."""
        authorize(ctx.actor, "importCustomers")
        results: list[ImportRowResult] = []
        fresh: list[NewCustomer] = []
        seen: set[UUID] = set()
        for row in rows:
            id_ = customer_id(row.account)
            if id_ in seen:
                results.append(_conflict(row, "account appears earlier in the same import"))
                continue
            seen.add(id_)
            try:
                existing: Customer = self.repository.get(id_)
            except AggregateNotFoundError:
                fresh.append(row)
                results.append(ImportRowResult(account=row.account, status="created"))
                continue
            difference = self._difference(existing, row)
            if difference:
                results.append(_conflict(row, "already exists with different " + difference))
            else:
                results.append(ImportRowResult(account=row.account, status="unchanged"))
        if not fresh:
            return results, None
        keys = self.keys.ensure_many([(customer_id(r.account), r.account) for r in fresh])
        new = [
            Customer.open(
                r.account,
                r.personal,
                r.profile,
                keys[customer_id(r.account)],
                ctx.meta("importCustomers", r),
            )
            for r in fresh
        ]
        try:
            return results, last_position(self.save(*new))
        except IntegrityError:
            return self._save_one_by_one(new, results)

    # -- plumbing ------------------------------------------------------------------

    def _difference(self, existing: Customer, row: NewCustomer) -> str:
        fields: list[str] = []
        personal = self.personal(existing)
        for name in ("name", "address", "phone", "email"):
            if getattr(personal, name) != getattr(row.personal, name):
                fields.append(name)
        for name, label in (
            ("area", "area"),
            ("customer_type", "customerType"),
            ("tariff_plan", "tariffPlan"),
            ("connection_date", "connectionDate"),
        ):
            if getattr(existing.profile, name) != getattr(row.profile, name):
                fields.append(label)
        return ", ".join(fields)

    def _save_one_by_one(
        self, new: list[Customer], results: list[ImportRowResult]
    ) -> tuple[list[ImportRowResult], int | None]:
        last: int | None = None
        by_account = {r.account: i for i, r in enumerate(results)}
        for customer in new:
            try:
                last = last_position(self.save(customer)) or last
            except IntegrityError:
                i = by_account[customer.account]
                results[i] = ImportRowResult(
                    account=customer.account,
                    status="conflict",
                    message="created concurrently by another request",
                )
        return results, last

    def _update(self, account: str, meta: EventMeta, action: Callable[[Customer], Any]) -> Outcome:
        def attempt() -> Outcome | Save[Outcome]:
            customer = self.get(account)
            if customer.seen(meta):
                return Outcome(customer=customer, notification_id=None, replayed=True)
            if action(customer) is False:
                return Outcome(customer=customer, notification_id=None, changed=False)
            return Save(
                (customer,), lambda r: Outcome(customer=customer, notification_id=last_position(r))
            )

        return save_with_retry(self, attempt, f"customer {account} is changing too fast; try again")


def check_new(new: NewCustomer) -> None:
    """Raise ``ValidationFailed`` naming every broken rule of a new customer."""
    errors = Collector()
    check_account(errors, "accountNumber", new.account)
    new.personal.check(errors)
    new.profile.check(errors)
    errors.raise_if_any()


def _conflict(row: NewCustomer, message: str) -> ImportRowResult:
    return ImportRowResult(account=row.account, status="conflict", message=message)
