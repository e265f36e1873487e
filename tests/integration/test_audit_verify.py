"""Tamper evidence: rows altered, removed or reordered in any event table are found by verify."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from bootstrap.migrate import migrate_database
from commands.alerts import AlertDesk
from commands.api_keys import ApiKeyRegistry
from commands.audit_verify import (
    LOGS,
    Checkpoint,
    Finding,
    create_checkpoint,
    event_chain,
    install_chain,
    verify,
)
from commands.context import Actor, CommandContext, Role
from commands.customers import CustomerBook
from commands.fleet import FleetOperations
from commands.meters import MeterRegistry
from commands.operations import OperationsLog
from commands.sims import SimInventory
from commands.tariffs import TariffBook
from config.settings import Settings
from domain.alert import AlertType, Severity, series_id
from domain.api_key import api_key_id
from domain.campaign import CampaignKind, CampaignSpec, CohortFilter, CohortMember
from domain.customer import CustomerType
from domain.detection import AlertDecision, Verdict
from domain.load_limit import LoadLimit
from domain.meter import Meter
from domain.pricing import TariffSpec
from domain.projection_ledger import ProjectionLedger
from domain.sim_rules import SimSpec, luhn_digit
from domain.values import ConnectionProfile, Location, MeterSpec
from hes.cli import app
from tests.conftest import JWT_SECRET, RUN_ID, new_serial
from tests.integration.customer_support import customer_book, new_customer
from tests.services import Services

pytestmark = pytest.mark.integration


def ctx(version: int) -> CommandContext:
    """The caller of an aggregate's ``version``-th event: subject ``actor-<version>``, admin."""
    return CommandContext(actor=Actor(subject=f"actor-{version}", roles=frozenset({Role.ADMIN})))


def _follow(steps: list[Callable[[CommandContext], object]], events: int) -> None:
    """Run the first ``events - 1`` steps, step n as the caller of version n + 1."""
    for version, step in enumerate(steps[: events - 1], start=2):
        step(ctx(version))


@dataclass
class Store:
    """An event store of its own (schema ``v_<run>_<n>``), dropped after the test."""

    settings: Settings
    registry: MeterRegistry
    tariffs: TariffBook
    alerts: AlertDesk
    api_keys: ApiKeyRegistry
    operations: OperationsLog
    sims: SimInventory
    customers: CustomerBook
    fleet: FleetOperations
    conn: psycopg.Connection[Any]

    @property
    def schema(self) -> str:
        """The store's schema name."""
        return self.settings.database.schema

    def table(self, log: str) -> sql.Identifier:
        """The log's event table."""
        return sql.Identifier(self.schema, f"{log}_events")

    def sql(self, statement: str, *params: object, log: str = "meters") -> None:
        """Run one statement on ``{events}`` (the log's event table), as a tamperer would."""
        self.conn.execute(sql.SQL(statement).format(events=self.table(log)), params)  # type: ignore[arg-type]

    def aggregate(self, log: str, events: int = 4) -> UUID:
        """A new aggregate of the log with ``events`` events (2 to 4); version n by actor-n."""
        build = {
            "meters": self.meter,
            "tariffs": self.tariff,
            "alerts": self.alert,
            "api_keys": self.api_key,
            "sims": self.sim,
            "operations": self.ledger,
            "customers": self.customer,
            "fleet": self.campaign,
        }[log]
        return build(events)

    def meter(self, events: int = 4) -> UUID:
        """A new meter with ``events`` events (2 to 4), written through the registry."""
        spec = MeterSpec(
            serial=new_serial("V"),
            manufacturer="Acme",
            model="V1",
            firmware="1",
            phases=1,
            region="R",
            area="A",
            connection=ConnectionProfile(host="127.1.1.1"),
        )
        meter = Meter.register(spec, ctx(1).meta("test"))
        if events > 1:
            meter.commission(Location(address="1 Grid Rd"), "ACC-1", ctx(2).meta("test"))
        if events > 2:
            meter.assign_customer("ACC-2", ctx(3).meta("test"))
        if events > 3:
            meter.change_connection_profile(ConnectionProfile(host="127.1.1.2"), ctx(4).meta("t"))
        self.registry.save(meter)
        return meter.id

    def tariff(self, events: int = 4) -> UUID:
        """A new region's tariff with ``events`` events: created, then base price changes."""
        region = new_serial("VT")
        spec = TariffSpec(region=region, currency="EUR", base_price=Decimal("0.20"), timezone="UTC")
        id_ = self.tariffs.create_tariff(spec, ctx(1)).tariff.id
        for version in range(2, events + 1):
            self.tariffs.change_base_price(region, Decimal(f"0.2{version}"), ctx(version))
        return id_

    def alert(self, events: int = 4) -> UUID:
        """A new alert with ``events`` events: raised, acknowledged, recurred, resolved.

        Its series holds two events (started, opened), three once the alert is resolved.
        """
        key = f"TAMPER:{new_serial('VA')}"
        decision = AlertDecision(
            verdict=Verdict.RAISE,
            alert_type=AlertType.TAMPER,
            severity=Severity.HIGH,
            region="R",
            dedup_key=key,
            message="cover opened",
            observed_at=datetime.now(UTC),
        )
        id_ = self.alerts.raise_or_recur(decision, ctx(1)).alert.id
        steps: list[Callable[[CommandContext], object]] = [
            lambda c: self.alerts.acknowledge(id_, c),
            lambda c: self.alerts.raise_or_recur(decision, c),
            lambda c: self.alerts.resolve(id_, "fixed", c),
        ]
        _follow(steps, events)
        return id_

    def api_key(self, events: int = 4) -> UUID:
        """A new API key with ``events`` events: created, rotated (twice), revoked."""
        prefix = self.api_keys.create(new_serial("K"), ["viewer"], [], ctx(1)).key.prefix
        steps: list[Callable[[CommandContext], object]] = [
            lambda c: self.api_keys.rotate(prefix, c),
            lambda c: self.api_keys.rotate(prefix, c),
            lambda c: self.api_keys.revoke(prefix, "retired", c),
        ]
        _follow(steps, events)
        return api_key_id(prefix)

    def sim(self, events: int = 4) -> UUID:
        """A new SIM card with ``events`` events: added, activated, suspended, resumed."""
        body = "8944" + uuid.uuid4().int.__str__()[:14]
        iccid = body + luhn_digit(body)
        spec = SimSpec(iccid=iccid, provider="Vodafone")
        id_ = self.sims.add_sim(spec, ctx(1)).sim.id
        steps: list[Callable[[CommandContext], object]] = [
            lambda c: self.sims.activate_sim(iccid, None, c),
            lambda c: self.sims.suspend_sim(iccid, "unpaid", c),
            lambda c: self.sims.resume_sim(iccid, c),
        ]
        _follow(steps, events)
        return id_

    def ledger(self, events: int = 4) -> UUID:
        """A new projection ledger with ``events`` events: opened, then positions skipped."""
        ledger = ProjectionLedger.open(new_serial("proj"), ctx(1).meta("test"))
        for version in range(2, events + 1):
            ledger.skip(version, "meters", None, "t", "poison", ctx(version).meta("test"))
        self.operations.save(ledger)
        return ledger.id

    def customer(self, events: int = 4) -> UUID:
        """A new customer with ``events`` events: created, plan changed (twice), suspended."""
        account = new_serial("VC")
        new = new_customer(account)
        id_ = self.customers.create_customer(new, ctx(1)).customer.id
        steps: list[Callable[[CommandContext], object]] = [
            lambda c: self.customers.change_plan(account, CustomerType.PUBLIC, "P2", c),
            lambda c: self.customers.change_plan(account, CustomerType.PUBLIC, "P3", c),
            lambda c: self.customers.suspend_account(account, "unpaid", c),
        ]
        _follow(steps, events)
        return id_

    def campaign(self, events: int = 4) -> UUID:
        """A new load-limit campaign with ``events`` events: started, paused, resumed, paused."""
        spec = CampaignSpec(
            name="verify",
            kind=CampaignKind.LOAD_LIMIT,
            cohort=CohortFilter(region="R"),
            load_limit=LoadLimit(threshold_normal_w=5000.0, threshold_emergency_w=2000.0),
        )
        member = CohortMember(
            meter_id=uuid.uuid4(), serial=new_serial("VF"), manufacturer="Acme", model="V1"
        )
        id_ = self.fleet.start_campaign(spec, [member], ctx(1)).aggregate.id
        steps: list[Callable[[CommandContext], object]] = [
            lambda c: self.fleet.pause_campaign(id_, c),
            lambda c: self.fleet.resume_campaign(id_, c),
            lambda c: self.fleet.pause_campaign(id_, c),
        ]
        _follow(steps, events)
        return id_

    def checkpoint(self, log: str) -> Checkpoint:
        """Checkpoint every log; the one taken of ``log``."""
        made = {c.log: c for c in create_checkpoint(self.conn, self.schema)}
        return made[log]


@pytest.fixture
def store(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A freshly migrated store with three meters, a tariff, an alert and an API key in it."""
    settings = Settings.of(
        database_url=services.database_url,
        db_schema=f"v_{RUN_ID}_{uuid.uuid4().hex[:6]}",
        data_dir=tmp_path_factory.mktemp("verify"),
        jwt_secret=JWT_SECRET,
    )
    migrate_database(settings)
    env = settings.database.eventsourcing_env()
    registry, tariffs, alerts = MeterRegistry(env=env), TariffBook(env=env), AlertDesk(env=env)
    api_keys = ApiKeyRegistry(env=env)
    operations = OperationsLog(env=env)
    sims = SimInventory(env=env)
    customers = customer_book(settings)
    fleet = FleetOperations(env=env)
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        s = Store(
            settings, registry, tariffs, alerts, api_keys, operations, sims, customers, fleet, conn
        )
        for _ in range(3):
            s.meter()
        s.tariff()
        s.alert()
        s.api_key()
        s.ledger()
        s.sim()
        s.customer()
        s.campaign()
        try:
            yield s
        finally:
            for application in (
                registry,
                tariffs,
                alerts,
                api_keys,
                operations,
                sims,
                customers,
                fleet,
            ):
                application.close()
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(s.schema)))


def only(store: Store) -> Finding:
    """The single finding of a verify that must fail."""
    report = verify(store.conn, store.schema)
    assert not report.intact
    assert len(report.findings) == 1, report.findings
    return report.findings[0]


@pytest.mark.parametrize("log", LOGS)
def test_events_written_through_the_applications_are_chained(store: Store, log: str) -> None:
    id_ = store.aggregate(log)
    rows = store.conn.execute(
        sql.SQL(
            "SELECT originator_version, topic, state, chain FROM {} WHERE originator_id = %s"
            " ORDER BY originator_version"
        ).format(store.table(log)),
        (id_,),
    ).fetchall()
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    prev = b""
    for version, topic, state, chain in rows:
        prev = event_chain(prev, id_, version, topic, bytes(state))
        assert bytes(chain) == prev


def test_intact_store_verifies_clean_with_totals_and_each_log(store: Store) -> None:
    first = create_checkpoint(store.conn, store.schema)
    # 3 meters x 4 events; a tariff of 4; an alert of 4 and its series of 3; an API key of 4;
    # a SIM card of 4; a projection ledger of 4; a customer of 4; a campaign of 4
    assert [(c.log, c.position, c.events) for c in first] == [
        ("meters", 12, 12),
        ("tariffs", 4, 4),
        ("alerts", 7, 7),
        ("api_keys", 4, 4),
        ("sims", 4, 4),
        ("operations", 4, 4),
        ("customers", 4, 4),
        ("fleet", 4, 4),
    ]
    assert create_checkpoint(store.conn, store.schema) == []  # nothing new
    store.meter()
    store.alert(events=2)  # its series: 2 more events
    report = verify(store.conn, store.schema)
    assert report.intact, report.findings
    assert (report.aggregates, report.events) == (
        4 + 1 + 4 + 1 + 1 + 1 + 1 + 1,
        16 + 4 + 11 + 4 + 4 + 4 + 4 + 4,
    )
    assert (report.checkpoints, report.unanchored_events) == (8, 4 + 4)
    assert [
        (p.log, p.table, p.aggregates, p.events, p.checkpointed_position, p.unanchored_events)
        for p in report.logs
    ] == [
        ("meters", "meters_events", 4, 16, 12, 4),
        ("tariffs", "tariffs_events", 1, 4, 4, 0),
        ("alerts", "alerts_events", 4, 11, 7, 4),
        ("api_keys", "api_keys_events", 1, 4, 4, 0),
        ("sims", "sims_events", 1, 4, 4, 0),
        ("operations", "operations_events", 1, 4, 4, 0),
        ("customers", "customers_events", 1, 4, 4, 0),
        ("fleet", "fleet_events", 1, 4, 4, 0),
    ]
    assert report.events_per_second > 0
    second = create_checkpoint(store.conn, store.schema)
    assert [(c.log, c.position, c.events) for c in second] == [
        ("meters", 16, 4),
        ("alerts", 11, 4),
    ]
    assert verify(store.conn, store.schema).intact


def test_migration_is_idempotent_and_backfills_every_log(store: Store) -> None:
    assert install_chain(store.conn, store.schema) == []  # already installed: nothing to do
    for log in LOGS:
        store.conn.execute(
            sql.SQL("DROP TRIGGER {} ON {}").format(
                sql.Identifier(f"{log}_events_chain"), store.table(log)
            )
        )
        store.sql("UPDATE {events} SET chain = NULL", log=log)
    assert install_chain(store.conn, store.schema) == list(LOGS)
    assert verify(store.conn, store.schema).intact


def test_a_single_log_store_upgrades_with_its_checkpoints_and_anchors(store: Store) -> None:
    """A deployment from before tariffs and alerts were chained: old checkpoints stay valid."""
    old = store.checkpoint("meters")
    table = sql.Identifier(store.schema, "audit_checkpoints")
    store.conn.execute(sql.SQL("DELETE FROM {} WHERE log <> 'meters'").format(table))
    store.conn.execute(
        sql.SQL(
            "ALTER TABLE {t} DROP CONSTRAINT audit_checkpoints_pkey;"
            " ALTER TABLE {t} DROP COLUMN log; ALTER TABLE {t} ADD PRIMARY KEY (position)"
        ).format(t=table)
    )
    for log in ("tariffs", "alerts"):
        store.conn.execute(
            sql.SQL("DROP TRIGGER {} ON {}").format(
                sql.Identifier(f"{log}_events_chain"), store.table(log)
            )
        )
        store.sql("ALTER TABLE {events} DROP COLUMN chain", log=log)
    # Rebuild the applications: their prepared statements predate the dropped column.
    for application in (store.tariffs, store.alerts):
        application.close()
    env = store.settings.database.eventsourcing_env()
    store.tariffs, store.alerts = TariffBook(env=env), AlertDesk(env=env)
    store.tariff(events=2)  # written unchained, before the upgrade

    migrate_database(store.settings)  # what `hes migrate` runs after the upgrade

    key = store.conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass"
        " AND contype = 'p'",
        (table.as_string(store.conn),),
    ).fetchone()
    assert key is not None and key[0].replace('"', "") == "PRIMARY KEY (log, position)"
    legacy = f"{old.position}:{old.digest}"
    report = verify(store.conn, store.schema, {("meters", old.position): bytes.fromhex(old.digest)})
    assert report.intact, report.findings
    assert [(p.log, p.checkpoints, p.events) for p in report.logs] == [
        ("meters", 1, 12),
        ("tariffs", 0, 6),
        ("alerts", 0, 7),
        ("api_keys", 0, 4),
        ("sims", 0, 4),
        ("operations", 0, 4),
        ("customers", 0, 4),
        ("fleet", 0, 4),
    ]
    store.alert()  # written through the trigger installed by the upgrade
    made = create_checkpoint(store.conn, store.schema)
    assert [c.log for c in made] == [
        "tariffs",
        "alerts",
        "api_keys",
        "sims",
        "operations",
        "customers",
        "fleet",
    ]
    assert verify(store.conn, store.schema).intact
    result = CliRunner().invoke(app, ["audit", "verify", "--anchor", legacy], env=cli_env(store))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("log", LOGS)
def test_altered_state_is_found_at_that_event(store: Store, log: str) -> None:
    id_ = store.aggregate(log)
    store.sql(
        "UPDATE {events} SET state = convert_to("
        "replace(convert_from(state, 'UTF8'), 'actor-3', 'actor-9'), 'UTF8')"
        " WHERE originator_id = %s AND originator_version = 3",
        id_,
        log=log,
    )
    finding = only(store)
    assert (finding.log, finding.kind, finding.aggregate_id, finding.version) == (
        log,
        "altered",
        id_,
        3,
    )


def test_altered_chain_value_is_told_apart(store: Store) -> None:
    id_ = store.aggregate("tariffs")
    store.sql(
        "UPDATE {events} SET chain = sha256(chain) WHERE originator_id = %s"
        " AND originator_version = 2",
        id_,
        log="tariffs",
    )
    finding = only(store)
    assert (finding.log, finding.kind, finding.aggregate_id, finding.version) == (
        "tariffs",
        "altered",
        id_,
        2,
    )
    assert "event is intact" in finding.detail


@pytest.mark.parametrize("log", LOGS)
def test_removed_middle_event_is_found_at_its_version(store: Store, log: str) -> None:
    id_ = store.aggregate(log)
    store.sql(
        "DELETE FROM {events} WHERE originator_id = %s AND originator_version = 2", id_, log=log
    )
    finding = only(store)
    assert (finding.log, finding.kind, finding.aggregate_id, finding.version) == (
        log,
        "removed",
        id_,
        2,
    )


@pytest.mark.parametrize("log", LOGS)
def test_swapped_versions_are_reported_as_reordered(store: Store, log: str) -> None:
    id_ = store.aggregate(log)
    for old, new in ((2, 0), (3, 2), (0, 3)):  # the primary key forbids a one-statement swap
        store.sql(
            "UPDATE {events} SET originator_version = %s"
            " WHERE originator_id = %s AND originator_version = %s",
            new,
            id_,
            old,
            log=log,
        )
    finding = only(store)
    assert (finding.log, finding.kind, finding.aggregate_id, finding.version) == (
        log,
        "reordered",
        id_,
        2,
    )
    assert "recorded as version 3" in finding.detail


@pytest.mark.parametrize("log", LOGS)
def test_removed_last_event_is_caught_by_the_checkpoint(store: Store, log: str) -> None:
    id_ = store.aggregate(log, events=2)
    checkpoint = store.checkpoint(log)
    for other in LOGS:  # more events after the checkpoints: still verified by their chains
        store.aggregate(other)
    assert verify(store.conn, store.schema).intact
    store.sql(
        "DELETE FROM {events} WHERE originator_id = %s AND originator_version = 2", id_, log=log
    )
    finding = only(store)
    assert (finding.log, finding.kind, finding.position) == (log, "checkpoint", checkpoint.position)
    assert f"{checkpoint.events - 1} events now" in finding.detail


@pytest.mark.parametrize("log", LOGS)
def test_recomputed_chains_are_caught_by_an_anchor(store: Store, log: str) -> None:
    id_ = store.aggregate(log, events=2)
    checkpoint = store.checkpoint(log)
    # A tamperer with full access rewrites the event, its chain and every checkpoint.
    store.sql(
        "UPDATE {events} SET state = convert_to("
        "replace(convert_from(state, 'UTF8'), 'actor-2', 'actor-7'), 'UTF8'),"
        " chain = NULL WHERE originator_id = %s AND originator_version = 2",
        id_,
        log=log,
    )
    store.conn.execute(
        sql.SQL("DROP TRIGGER {} ON {}").format(
            sql.Identifier(f"{log}_events_chain"), store.table(log)
        )
    )
    assert install_chain(store.conn, store.schema) == [log]
    store.conn.execute(
        sql.SQL("DELETE FROM {}").format(sql.Identifier(store.schema, "audit_checkpoints"))
    )
    forged = store.checkpoint(log)
    assert forged.digest != checkpoint.digest
    assert verify(store.conn, store.schema).intact  # the database alone cannot tell
    anchored = verify(
        store.conn, store.schema, {(log, checkpoint.position): bytes.fromhex(checkpoint.digest)}
    )
    assert [(f.log, f.kind, f.position) for f in anchored.findings] == [
        (log, "checkpoint", checkpoint.position)
    ]
    with pytest.raises(ValueError, match="unknown logs"):
        verify(store.conn, store.schema, {("readings", 1): bytes(32)})


def test_a_disabled_trigger_and_what_it_let_through_are_reported(store: Store) -> None:
    store.sql("ALTER TABLE {events} DISABLE TRIGGER alerts_events_chain", log="alerts")
    id_ = store.alert(events=2)
    series = series_id(store.alerts.get(id_).dedup_key)
    report = verify(store.conn, store.schema)
    assert {(f.log, f.kind, f.aggregate_id, f.version) for f in report.findings} == {
        ("alerts", "unchained", None, None),  # the trigger itself
        ("alerts", "unchained", id_, 1),
        ("alerts", "unchained", series, 1),
    }
    assert [p.intact for p in report.logs] == [True, True, False, True, True, True, True, True]


def cli_env(store: Store) -> dict[str, str]:
    """Environment pointing the CLI at the store."""
    s = store.settings
    return {
        "HES_DATABASE_URL": s.database.url or "",
        "HES_DB_SCHEMA": s.database.schema,
        "HES_JWT_SECRET": JWT_SECRET,
        "HES_DATA_DIR": str(s.runtime.data_dir),
    }


def test_cli_exit_codes(store: Store) -> None:
    env = cli_env(store)
    runner = CliRunner()
    made = runner.invoke(app, ["audit", "checkpoint", "--json"], env=env)
    assert made.exit_code == 0, made.output
    checkpoints = json.loads(made.stdout)
    assert [(c["log"], c["position"]) for c in checkpoints] == [
        ("meters", 12),
        ("tariffs", 4),
        ("alerts", 7),
        ("api_keys", 4),
        ("sims", 4),
        ("operations", 4),
        ("customers", 4),
        ("fleet", 4),
    ]
    assert all(len(c["digest"]) == 64 for c in checkpoints)
    anchors = [f"{c['log']}:{c['position']}:{c['digest']}" for c in checkpoints]
    store.tariff(events=2)
    printed = runner.invoke(app, ["audit", "checkpoint"], env=env)
    assert printed.exit_code == 0, printed.output
    assert "checkpoint tariffs:6:" in printed.stdout and "meters:" not in printed.stdout

    args = ["audit", "verify", "--json"] + [x for a in anchors for x in ("--anchor", a)]
    clean = runner.invoke(app, args, env=env)
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.stdout)["intact"] is True
    table = runner.invoke(app, ["audit", "verify"], env=env)
    assert table.exit_code == 0, table.output
    assert "intact" in table.stdout and "tariffs" in table.stdout

    id_ = store.conn.execute(
        sql.SQL("SELECT originator_id FROM {} LIMIT 1").format(store.table("alerts"))
    ).fetchone()
    assert id_ is not None
    store.sql(
        "UPDATE {events} SET state = state || '\\x20'::bytea"
        " WHERE originator_id = %s AND originator_version = 1",
        id_[0],
        log="alerts",
    )
    tampered = runner.invoke(app, ["audit", "verify", "--json"], env=env)
    assert tampered.exit_code == 1, tampered.output
    body = json.loads(tampered.stdout)
    assert {(f["log"], f["kind"], f["aggregate_id"], f["version"]) for f in body["findings"]} >= {
        ("alerts", "altered", str(id_[0]), 1)
    }
    assert [p["intact"] for p in body["logs"]] == [True, True, False, True, True, True, True, True]
    shown = runner.invoke(app, ["audit", "verify"], env=env)
    assert shown.exit_code == 1 and "TAMPERED" in shown.stdout and "alerts" in shown.stdout
    for bad in ("12:zz", "readings:1:" + "0" * 64, "meters:12", "meters:x:" + "0" * 64):
        refused = runner.invoke(app, ["audit", "verify", "--anchor", bad], env=env)
        assert refused.exit_code == 2, (bad, refused.output)


def test_verify_reports_its_progress_up_to_every_event(store: Store) -> None:
    told: list[tuple[int, int]] = []
    report = verify(
        store.conn, store.schema, progress=lambda done, total: told.append((done, total))
    )
    assert told and told[-1] == (report.events, report.events)
    assert [done for done, _ in told] == sorted(done for done, _ in told)
