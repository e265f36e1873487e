"""Customers over PostgreSQL: commands, projection, meter links, erasure (pg_dump), audit."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import DeliverPolicy
from psycopg_pool import AsyncConnectionPool
from typer.testing import CliRunner

from adapters.customer_keys import customer_master_key
from adapters.nats.cloudevents import decode_cloudevent
from adapters.nats.event_relay import EventRelay
from adapters.nats.subjects import event_subject
from bootstrap.workers import SupervisedProjection, customers_projection
from commands.audit import history_of, state_of
from commands.audit_verify import verify
from commands.context import Role
from commands.customer_adopt import adopt_accounts
from commands.customer_csv import TEMPLATE_COLUMNS
from commands.customer_links import close_customer, erase_customer
from commands.customers import CustomerBook
from commands.meters import MeterRegistry
from config.settings import Settings
from domain.customer import CustomerStatus, CustomerType
from domain.errors import Conflict, Forbidden, NotFound, ValidationFailed
from domain.personal_data import ERASED
from domain.values import ConnectionProfile, MeterSpec
from hes.cli import app
from projections.customers_queries import CustomerFilter, CustomerQueries
from tests.conftest import JWT_SECRET, new_serial
from tests.integration.customer_support import ctx, customer_book, new_account, new_customer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def customers_worker(settings: Settings) -> Iterator[SupervisedProjection]:
    """The customers projection worker for this module."""
    worker = customers_projection(settings)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def book(settings: Settings) -> Iterator[CustomerBook]:
    """A customer book over the test store."""
    app = customer_book(settings)
    yield app
    app.close()


@pytest.fixture
def registry(settings: Settings, book: CustomerBook) -> Iterator[MeterRegistry]:
    """A meter registry that checks accounts against ``book``."""
    app = MeterRegistry(env=settings.database.eventsourcing_env())
    app.customers = book
    yield app
    app.close()


@pytest.fixture
async def queries(settings: Settings) -> AsyncIterator[CustomerQueries]:
    """The customers read-model queries over an async pool."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.database.url or "", min_size=1, max_size=2, open=False, kwargs={"autocommit": True}
    )
    await pool.open()
    key = customer_master_key(settings.customers.master_key, settings.runtime.data_dir)
    yield CustomerQueries(pool, settings.database.schema, key)
    await pool.close()


def register(registry: MeterRegistry) -> Any:
    """A freshly registered meter."""
    spec = MeterSpec(
        serial=new_serial("CUS"),
        manufacturer="Acme",
        model="M1",
        firmware="1.0",
        phases=1,
        region="North",
        area="North",
        connection=ConnectionProfile(host="127.0.0.1"),
    )
    return registry.register_meter(spec, ctx()).meter


def test_account_numbers_are_unique_and_creation_is_idempotent(book: CustomerBook) -> None:
    account = new_account()
    new = new_customer(account)
    first = book.create_customer(new, ctx(key="k1"))
    again = book.create_customer(new, ctx(key="k1"))
    assert again.replayed and again.customer.id == first.customer.id
    with pytest.raises(Conflict, match="already exists"):
        book.create_customer(new, ctx())
    assert book.personal(book.get(account)) == new.personal
    events = history_of([book], str(first.customer.id))
    assert [(e.type, e.actor, e.correlation_id) for e in events] == [
        ("Created", "ann", events[0].correlation_id)
    ]
    assert events[0].correlation_id


def test_validation_names_fields_and_roles_are_checked(book: CustomerBook) -> None:
    bad = new_customer("not valid!")
    with pytest.raises(ValidationFailed) as exc:
        book.create_customer(bad, ctx())
    assert {(e.field, e.rule) for e in exc.value.errors} == {("accountNumber", "format")}
    with pytest.raises(Forbidden, match="createCustomer needs role"):
        book.create_customer(new_customer(new_account()), ctx("vic", Role.VIEWER))
    account = new_account()
    book.create_customer(new_customer(account), ctx())
    with pytest.raises(Forbidden, match="eraseCustomer needs role admin"):
        book.erase_account(account, "asked", ctx())


async def test_projection_lists_filters_and_counts_with_meters(
    book: CustomerBook,
    registry: MeterRegistry,
    queries: CustomerQueries,
    customers_worker: SupervisedProjection,
    projection: SupervisedProjection,
) -> None:
    area = f"Area-{new_account('A')}"
    accounts = sorted(new_account() for _ in range(3))
    last = 0
    for account in accounts:
        last = book.create_customer(new_customer(account, area=area), ctx()).notification_id or 0
    last = book.suspend_account(accounts[2], "unpaid", ctx()).notification_id or last
    changed = book.change_plan(accounts[0], CustomerType.AGRICULTURAL, "AG-2", ctx())
    last = changed.notification_id or last
    meter = register(registry)
    assigned = registry.assign_customer(meter.id, accounts[0], ctx())
    assert await queries.wait_for(last, 10)
    page = await queries.page(CustomerFilter(area=area), 2, None)
    assert [c.account for c in page.items] == accounts[:2] and page.has_next_page
    rest = await queries.page(CustomerFilter(area=area), 2, page.end_cursor)
    assert [c.account for c in rest.items] == accounts[2:] and not rest.has_next_page
    suspended = await queries.page(
        CustomerFilter(area=area, status=CustomerStatus.SUSPENDED), 9, None
    )
    assert [c.account for c in suspended.items] == [accounts[2]]
    first = page.items[0]
    assert (first.customer_type, first.tariff_plan) == (CustomerType.AGRICULTURAL, "AG-2")
    assert first.name == book.personal(book.get(accounts[0])).name
    from projections.meters_queries import MeterQueries

    meters = MeterQueries(queries.pool, "")  # only its position is used
    meters.schema = queries.schema
    assert await meters.wait_for(assigned.notification_id or 0, 10)
    found = await queries.by_account(accounts[0])
    assert found is not None and found.meters == [meter.spec.serial]
    owner = await queries.for_meter(meter.spec.serial)
    assert owner is not None and owner.account == accounts[0]
    counts = {c.area: (c.customers, c.active) for c in await queries.counts_per_area()}
    assert counts[area] == (3, 2)


def test_meters_are_assigned_only_to_existing_active_customers(
    book: CustomerBook, registry: MeterRegistry
) -> None:
    meter = register(registry)
    with pytest.raises(NotFound, match="no customer"):
        registry.assign_customer(meter.id, new_account("NOPE"), ctx())
    account = new_account()
    book.create_customer(new_customer(account), ctx())
    book.suspend_account(account, "unpaid", ctx())
    with pytest.raises(Conflict, match="suspended"):
        registry.assign_customer(meter.id, account, ctx())
    book.reactivate_account(account, ctx())
    assert registry.assign_customer(meter.id, account, ctx()).meter.customer_account == account
    spec = MeterSpec(
        serial=new_serial("CUI"),
        manufacturer="Acme",
        model="M1",
        firmware="1.0",
        phases=1,
        region="North",
        area="North",
        connection=ConnectionProfile(host="127.0.0.1"),
    )
    results, _ = registry.import_meters([(spec, "UNKNOWN-ACCOUNT-1")], ctx())
    assert results[0].status == "conflict" and "no customer" in results[0].message


async def test_closing_with_meters_is_refused_unless_they_are_unassigned(
    book: CustomerBook,
    registry: MeterRegistry,
    queries: CustomerQueries,
    projection: SupervisedProjection,
) -> None:
    account = new_account()
    book.create_customer(new_customer(account), ctx())
    meters = [register(registry) for _ in range(2)]
    last = 0
    for meter in meters:
        last = registry.assign_customer(meter.id, account, ctx()).notification_id or 0
    await asyncio.to_thread(_wait_meters, registry, last)
    with pytest.raises(Conflict, match="has 2 meters assigned"):
        close_customer(book, registry, account, "moved out", False, ctx())
    outcome = close_customer(book, registry, account, "moved out", True, ctx())
    assert outcome.customer.status is CustomerStatus.CLOSED
    assert all(registry.get(m.id).customer_account is None for m in meters)
    closed = history_of([book], account)[-1]
    assert closed.type == "Closed" and closed.payload["meters_unassigned"] == 2


def _wait_meters(registry: MeterRegistry, position: int) -> None:
    """Wait until the meters projection applied ``position``."""
    import time

    datastore: Any = registry.recorder.datastore  # type: ignore[attr-defined]
    for _ in range(200):
        with datastore.transaction(commit=False) as curs:
            curs.execute(
                f'SELECT max(notification_id) AS n FROM "{datastore.schema}".meters_view_tracking'
            )
            row = curs.fetchone()
        if row and (row["n"] or 0) >= position:
            return
        time.sleep(0.05)
    raise AssertionError("meters projection did not catch up")


def pg_dump(settings: Settings) -> str:
    """A plain-text dump of the test schema made by the real pg_dump binary."""
    done = subprocess.run(
        [
            "pg_dump",
            "--schema",
            settings.database.schema,
            "--no-owner",
            settings.database.url or "",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout


async def test_erasure_destroys_the_key_and_no_personal_value_is_left_in_a_dump(
    settings: Settings,
    book: CustomerBook,
    queries: CustomerQueries,
    customers_worker: SupervisedProjection,
) -> None:
    account = new_account("ERA")
    new = new_customer(account)
    book.create_customer(new, ctx())
    book.update_contact(
        account,
        msgspec_replace(new.personal, phone="+44 7700 123999"),
        "North",
        ctx(),
    )
    kept = new_account("KEEP")
    kept_new = new_customer(kept)
    book.create_customer(kept_new, ctx())
    values = [
        new.personal.name,
        new.personal.address.split("\n")[0],
        new.personal.phone,
        new.personal.email,
        "+44 7700 123999",
    ]
    before = pg_dump(settings)
    assert account in before  # the search works: the (non-personal) account is there
    with pytest.raises(Forbidden):
        erase_customer(book, account, "GDPR request 17", ctx())
    with pytest.raises(ValidationFailed):
        erase_customer(book, account, "", ctx("root", Role.ADMIN))
    erased = erase_customer(book, account, "GDPR request 17", ctx("root", Role.ADMIN))
    assert erased.customer.erased
    assert book.keys.get(erased.customer.id, account) is None
    assert await queries.wait_for(erased.notification_id or 0, 10)
    row = await queries.by_account(account)
    assert row is not None and row.erased and row.name == ERASED and row.email == ERASED
    dump = pg_dump(settings)
    for value in values:
        assert value not in dump, value
        assert value not in before, value  # sealed, never in clear, even before erasure
    other = await queries.by_account(kept)
    assert other is not None and other.name == kept_new.personal.name  # others unaffected
    # history and state still replay; personal fields cannot be opened any more
    entries = history_of([book], account)
    assert [e.type for e in entries] == ["Created", "ContactChanged", "Erased"]
    assert entries[-1].payload["reason"] == "GDPR request 17" and entries[-1].actor == "root"
    state = state_of([book], account, at=datetime.now(UTC))
    assert state.state["erased"] is True
    assert book.personal(book.get(account)).phone == ERASED
    first = state_of([book], account, version=1)  # stateAt before the erasure replays too
    assert first.state["status"] == "active" and first.state["account"] == account
    assert not any(v in str(first.state) for v in values)  # sealed only
    with pytest.raises(Conflict, match="erased"):
        book.update_contact(account, new.personal, "North", ctx())
    import psycopg

    with psycopg.connect(settings.database.url or "", autocommit=True) as conn:
        report = verify(conn, settings.database.schema)
    assert report.intact, report.findings
    assert any(p.log == "customers" and p.events >= 3 for p in report.logs)


def msgspec_replace(value: Any, **changes: Any) -> Any:
    """A copy of a struct with some fields changed."""
    import msgspec

    return msgspec.structs.replace(value, **changes)


def test_adopt_creates_customers_for_free_text_accounts_on_meters(
    settings: Settings, book: CustomerBook, projection: SupervisedProjection
) -> None:
    unchecked = MeterRegistry(
        env=settings.database.eventsourcing_env()
    )  # as before customers existed
    try:
        legacy, known = new_account("OLD"), new_account("OLD")
        book.create_customer(new_customer(known), ctx())
        last = 0
        for account in (legacy, known):
            meter = register(unchecked)
            last = unchecked.assign_customer(meter.id, account, ctx()).notification_id or 0
        _wait_meters(unchecked, last)
    finally:
        unchecked.close()
    report = adopt_accounts(book, ctx("root", Role.ADMIN))
    assert legacy in report.adopted and known not in report.adopted
    assert report.refused == {}
    adopted = book.get(legacy)
    assert adopted.status is CustomerStatus.ACTIVE and adopted.profile.area == "North"
    assert book.personal(adopted).name == f"Adopted account {legacy}"
    again = adopt_accounts(book, ctx("root", Role.ADMIN))
    assert legacy not in again.adopted and again.existing >= 2
    with pytest.raises(Forbidden):
        adopt_accounts(book, ctx())


async def test_customer_events_are_relayed_without_personal_data(
    settings: Settings, book: CustomerBook
) -> None:
    account = new_account("REL")
    new = new_customer(account)
    created = book.create_customer(new, ctx())
    nc = await nats.connect(settings.nats.url or "")
    try:
        relay = EventRelay(
            nc,
            settings.database.eventsourcing_env(),
            application_name="customers",
            source=settings.events_source,
            prefix=settings.nats.prefix,
        )
        await relay.relay_available()
        relay.close()
        sub = await nc.jetstream().subscribe(
            event_subject(settings.nats.prefix, "customer", "Created"),
            stream=settings.nats.stream("HES_EVENTS"),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        wanted = str(created.customer.id)
        raw = b""
        while not raw:
            msg = await sub.next_msg(timeout=5)
            if decode_cloudevent(msg.data)["subject"] == wanted:
                raw = msg.data
        await sub.unsubscribe()
    finally:
        await nc.close()
    event = decode_cloudevent(raw)
    assert event["type"] == "hes.customer.Created.v1" and event["actor"] == "ann"
    assert set(event["data"]) == {"account", "profile"}
    for value in (new.personal.name, new.personal.email, new.personal.phone, "v1:"):
        assert value.encode() not in raw


def test_cli_imports_a_csv_and_adopts_accounts(
    settings: Settings, book: CustomerBook, tmp_path: Path
) -> None:
    env = {
        "HES_DATABASE_URL": settings.database.url or "",
        "HES_DB_SCHEMA": settings.database.schema,
        "HES_JWT_SECRET": JWT_SECRET,
        "HES_DATA_DIR": str(settings.runtime.data_dir),
    }
    account = new_account("CLI")
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text(
        ",".join(TEMPLATE_COLUMNS) + f"\nCli Person,{account},1 Cli Road,,,North,,,,\n"
    )
    runner = CliRunner()
    imported = runner.invoke(app, ["customers", "import", str(csv_file)], env=env)
    assert imported.exit_code == 0, imported.output
    assert '"created":1' in imported.stdout
    assert book.personal(book.get(account)).name == "Cli Person"
    adopted = runner.invoke(app, ["customers", "adopt"], env=env)
    assert adopted.exit_code == 0, adopted.output
    assert '"refused":{}' in adopted.stdout
