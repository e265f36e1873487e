"""Tamper evidence: rows altered, removed or reordered in the event table are found by verify."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from commands.audit_verify import Finding, create_checkpoint, event_chain, install_chain, verify
from commands.context import SYSTEM, CommandContext
from commands.meters import MeterRegistry
from domain.meter import Meter
from domain.values import ConnectionProfile, Location, MeterSpec
from hes.cli import app
from hes.migrate import migrate_database
from hes.settings import Settings
from tests.conftest import JWT_SECRET, RUN_ID, new_serial
from tests.services import Services

pytestmark = pytest.mark.integration


@dataclass
class Store:
    """An event store of its own (schema ``v_<run>_<n>``), dropped after the test."""

    settings: Settings
    registry: MeterRegistry
    conn: psycopg.Connection[Any]

    @property
    def schema(self) -> str:
        """The store's schema name."""
        return self.settings.db_schema

    def sql(self, statement: str, *params: object) -> None:
        """Run one statement on ``{events}`` (the store's event table), as a tamperer would."""
        table = sql.Identifier(self.schema, "meters_events")
        self.conn.execute(sql.SQL(statement).format(events=table), params)  # type: ignore[arg-type]

    def meter(self, events: int = 4) -> UUID:
        """A new meter with ``events`` events (2 to 4), written through the registry."""
        meta = CommandContext(actor=SYSTEM).meta("test")
        spec = MeterSpec(
            serial=new_serial("V"),
            manufacturer="Acme",
            model="V1",
            firmware="1",
            phases=1,
            region="R",
            area="A",
            connection=ConnectionProfile(host="10.1.1.1"),
        )
        meter = Meter.register(spec, meta)
        if events > 1:
            meter.commission(Location(address="1 Grid Rd"), "ACC-1", meta)
        if events > 2:
            meter.assign_customer("ACC-2", meta)
        if events > 3:
            meter.change_connection_profile(ConnectionProfile(host="10.1.1.2"), meta)
        self.registry.save(meter)
        return meter.id


@pytest.fixture
def store(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A freshly migrated store with a few meters in it."""
    settings = Settings(
        database_url=services.database_url,
        db_schema=f"v_{RUN_ID}_{uuid.uuid4().hex[:6]}",
        data_dir=tmp_path_factory.mktemp("verify"),
        jwt_secret=JWT_SECRET,
    )
    migrate_database(settings)
    registry = MeterRegistry(env=settings.eventsourcing_env())
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        s = Store(settings, registry, conn)
        for _ in range(3):
            s.meter()
        try:
            yield s
        finally:
            registry.close()
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(s.schema)))


def only(store: Store) -> Finding:
    """The single finding of a verify that must fail."""
    report = verify(store.conn, store.schema)
    assert not report.intact
    assert len(report.findings) == 1, report.findings
    return report.findings[0]


def test_events_written_through_the_registry_are_chained(store: Store) -> None:
    id_ = store.meter()
    rows = store.conn.execute(
        sql.SQL(
            "SELECT originator_version, topic, state, chain FROM {} WHERE originator_id = %s"
            " ORDER BY originator_version"
        ).format(sql.Identifier(store.schema, "meters_events")),
        (id_,),
    ).fetchall()
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    prev = b""
    for version, topic, state, chain in rows:
        prev = event_chain(prev, id_, version, topic, bytes(state))
        assert bytes(chain) == prev


def test_intact_store_verifies_clean(store: Store) -> None:
    assert create_checkpoint(store.conn, store.schema) is not None
    assert create_checkpoint(store.conn, store.schema) is None  # nothing new
    store.meter()
    report = verify(store.conn, store.schema)
    assert report.intact, report.findings
    assert (report.aggregates, report.events) == (4, 16)
    assert (report.checkpoints, report.checkpointed_position) == (1, 12)
    assert report.unanchored_events == 4
    assert report.events_per_second > 0


def test_migration_is_idempotent_and_backfills(store: Store) -> None:
    assert not install_chain(store.conn, store.schema)  # already installed: nothing to do
    store.conn.execute(
        sql.SQL("DROP TRIGGER meters_events_chain ON {}").format(
            sql.Identifier(store.schema, "meters_events")
        )
    )
    store.sql("UPDATE {events} SET chain = NULL")
    assert install_chain(store.conn, store.schema)
    assert verify(store.conn, store.schema).intact


def test_altered_state_is_found_at_that_event(store: Store) -> None:
    id_ = store.meter()
    store.sql(
        "UPDATE {events} SET state = convert_to("
        "replace(convert_from(state, 'UTF8'), 'ACC-2', 'ACC-9'), 'UTF8')"
        " WHERE originator_id = %s AND originator_version = 3",
        id_,
    )
    finding = only(store)
    assert (finding.kind, finding.aggregate_id, finding.version) == ("altered", id_, 3)


def test_altered_chain_value_is_told_apart(store: Store) -> None:
    id_ = store.meter()
    store.sql(
        "UPDATE {events} SET chain = sha256(chain) WHERE originator_id = %s"
        " AND originator_version = 2",
        id_,
    )
    finding = only(store)
    assert (finding.kind, finding.aggregate_id, finding.version) == ("altered", id_, 2)
    assert "event is intact" in finding.detail


def test_removed_middle_event_is_found_at_its_version(store: Store) -> None:
    id_ = store.meter()
    store.sql("DELETE FROM {events} WHERE originator_id = %s AND originator_version = 2", id_)
    finding = only(store)
    assert (finding.kind, finding.aggregate_id, finding.version) == ("removed", id_, 2)


def test_swapped_versions_are_reported_as_reordered(store: Store) -> None:
    id_ = store.meter()
    for old, new in ((2, 0), (3, 2), (0, 3)):  # the primary key forbids a one-statement swap
        store.sql(
            "UPDATE {events} SET originator_version = %s"
            " WHERE originator_id = %s AND originator_version = %s",
            new,
            id_,
            old,
        )
    finding = only(store)
    assert (finding.kind, finding.aggregate_id, finding.version) == ("reordered", id_, 2)
    assert "recorded as version 3" in finding.detail


def test_removed_last_event_is_caught_by_the_checkpoint(store: Store) -> None:
    id_ = store.meter(events=2)
    checkpoint = create_checkpoint(store.conn, store.schema)
    assert checkpoint is not None
    store.meter()  # more events after the checkpoint: still verified by their chains
    assert verify(store.conn, store.schema).intact
    store.sql("DELETE FROM {events} WHERE originator_id = %s AND originator_version = 2", id_)
    finding = only(store)
    assert (finding.kind, finding.position) == ("checkpoint", checkpoint.position)
    assert f"{checkpoint.events - 1} events now" in finding.detail


def test_recomputed_chains_are_caught_by_an_anchor(store: Store) -> None:
    id_ = store.meter(events=2)
    checkpoint = create_checkpoint(store.conn, store.schema)
    assert checkpoint is not None
    # A tamperer with full access rewrites the event, its chain and every checkpoint.
    store.sql(
        "UPDATE {events} SET state = convert_to("
        "replace(convert_from(state, 'UTF8'), 'ACC-1', 'ACC-7'), 'UTF8'),"
        " chain = NULL WHERE originator_id = %s AND originator_version = 2",
        id_,
    )
    store.conn.execute(
        sql.SQL("DROP TRIGGER meters_events_chain ON {}").format(
            sql.Identifier(store.schema, "meters_events")
        )
    )
    assert install_chain(store.conn, store.schema)
    store.conn.execute(
        sql.SQL("DELETE FROM {}").format(sql.Identifier(store.schema, "audit_checkpoints"))
    )
    forged = create_checkpoint(store.conn, store.schema)
    assert forged is not None and forged.digest != checkpoint.digest
    assert verify(store.conn, store.schema).intact  # the database alone cannot tell
    anchored = verify(
        store.conn, store.schema, {checkpoint.position: bytes.fromhex(checkpoint.digest)}
    )
    assert [(f.kind, f.position) for f in anchored.findings] == [
        ("checkpoint", checkpoint.position)
    ]


def test_cli_exit_codes(store: Store) -> None:
    s = store.settings
    env = {
        "HES_DATABASE_URL": s.database_url or "",
        "HES_DB_SCHEMA": s.db_schema,
        "HES_JWT_SECRET": JWT_SECRET,
        "HES_DATA_DIR": str(s.data_dir),
    }
    runner = CliRunner()
    made = runner.invoke(app, ["audit", "checkpoint", "--json"], env=env)
    assert made.exit_code == 0, made.output
    checkpoint = json.loads(made.stdout)
    assert checkpoint["position"] == 12 and len(checkpoint["digest"]) == 64
    anchor = f"{checkpoint['position']}:{checkpoint['digest']}"

    clean = runner.invoke(app, ["audit", "verify", "--json", "--anchor", anchor], env=env)
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.stdout)["intact"] is True
    assert runner.invoke(app, ["audit", "verify"], env=env).exit_code == 0

    id_ = store.conn.execute(
        sql.SQL("SELECT originator_id FROM {} LIMIT 1").format(
            sql.Identifier(store.schema, "meters_events")
        )
    ).fetchone()
    assert id_ is not None
    store.sql(
        "UPDATE {events} SET state = state || '\\x20'::bytea"
        " WHERE originator_id = %s AND originator_version = 1",
        id_[0],
    )
    tampered = runner.invoke(app, ["audit", "verify", "--json"], env=env)
    assert tampered.exit_code == 1, tampered.output
    found = json.loads(tampered.stdout)["findings"]
    assert {(f["kind"], f["aggregate_id"], f["version"]) for f in found} >= {
        ("altered", str(id_[0]), 1)
    }
    table = runner.invoke(app, ["audit", "verify"], env=env)
    assert table.exit_code == 1 and "TAMPERED" in table.stdout
    bad = runner.invoke(app, ["audit", "verify", "--anchor", "12:zz"], env=env)
    assert bad.exit_code == 2
