"""Region capacity as a command with events: PostgreSQL event store, projection, audit, GraphQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import nats
import psycopg
import pytest
from litestar.testing import AsyncTestClient
from nats.js.api import DeliverPolicy
from psycopg import sql

from adapters.nats.cloudevents import decode_cloudevent
from adapters.nats.event_relay import EventRelay
from adapters.nats.subjects import event_subject
from bootstrap.workers import SupervisedProjection
from commands.audit import history_of
from commands.audit_verify import verify
from commands.context import Actor, CommandContext, Role
from commands.tariffs import TariffBook
from config.settings import Settings
from domain.errors import Forbidden
from domain.region import region_id
from tests.integration.gql import gql

pytestmark = pytest.mark.integration

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Any]

SET = (
    "mutation($r: String!, $kw: Float!) { setRegionCapacity(region: $r, kw: $kw) { __typename"
    " ... on RegionCapacity { region capacityKw version changed applied }"
    " ... on ValidationError { code fields { field rule } }"
    " ... on ForbiddenError { code message } } }"
)


def new_region() -> str:
    """A region name no other test uses."""
    return f"CAP-{uuid.uuid4().hex[:8]}"


def capacity_w(settings: Settings, region: str) -> float | None:
    """The region's row in the region_capacity read table (None when it has none)."""
    with psycopg.connect(settings.database.url or "", autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT capacity_w FROM {} WHERE region = %s").format(
                sql.Identifier(settings.database.schema, "region_capacity")
            ),
            (region,),
        ).fetchone()
    return None if row is None else float(row[0])


def wait_for_capacity(settings: Settings, region: str, expected_w: float) -> float | None:
    """The region's read-model capacity once it equals ``expected_w`` (or after 10 s)."""
    deadline = time.monotonic() + 10
    while (found := capacity_w(settings, region)) != expected_w and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def ctx(subject: str, role: Role) -> CommandContext:
    """Command context of a caller holding one role."""
    return CommandContext(actor=Actor(subject=subject, roles=frozenset({role})))


def test_the_command_records_an_event_with_its_actor_and_the_projection_writes_the_row(
    settings: Settings, tariffs_worker: SupervisedProjection
) -> None:
    region = new_region()
    book = TariffBook(env=settings.database.eventsourcing_env())
    try:
        book.set_region_capacity(region, 2500, ctx("ann", Role.ADMIN))
        assert wait_for_capacity(settings, region, 2.5e6) == 2.5e6
        outcome = book.set_region_capacity(region, 60, ctx("bob", Role.ADMIN))
        assert outcome.notification_id is not None
        assert wait_for_capacity(settings, region, 60_000.0) == 60_000.0

        with pytest.raises(Forbidden, match="setRegionCapacity needs role admin"):
            book.set_region_capacity(region, 1, ctx("olga", Role.OPERATOR))
        entries = history_of([book], region)
    finally:
        book.close()

    # what an auditor reads: who set which capacity, in the tariffs log
    assert [(e.log, e.aggregate_type, e.type) for e in entries] == [
        ("tariffs", "Region", "Created"),
        ("tariffs", "Region", "CapacitySet"),
        ("tariffs", "Region", "CapacitySet"),
    ]
    assert [e.actor for e in entries] == ["ann", "ann", "bob"]
    assert entries[2].payload["capacity_w"] == 60_000.0
    assert entries[2].payload["previous_w"] == 2.5e6
    assert entries[2].position == outcome.notification_id
    assert capacity_w(settings, region) == 60_000.0  # the refused command changed nothing
    # the region's events join the tariffs log's hash chain
    with psycopg.connect(settings.database.url or "", autocommit=True) as conn:
        report = verify(conn, settings.database.schema, logs=("tariffs",))
    assert report.intact and report.events >= 3


def test_an_event_supersedes_a_row_written_before_capacities_were_events(
    settings: Settings, tariffs_worker: SupervisedProjection
) -> None:
    region = new_region()
    with psycopg.connect(settings.database.url or "", autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {} (region, capacity_w) VALUES (%s, 5e6)").format(
                sql.Identifier(settings.database.schema, "region_capacity")
            ),
            (region,),
        )
    book = TariffBook(env=settings.database.eventsourcing_env())
    try:
        first = book.set_region_capacity(region, 7000, ctx("ann", Role.ADMIN))
    finally:
        book.close()
    assert first.changed and first.region.version == 2
    assert wait_for_capacity(settings, region, 7e6) == 7e6


async def test_graphql_mutation_sets_the_capacity_for_admins_only(
    client: Client, auth: Auth, settings: Settings, tariffs_worker: SupervisedProjection
) -> None:
    region = new_region()
    admin = auth(Role.ADMIN, subject="cap-admin")

    body = await gql(client, SET, {"r": region, "kw": 1234.5}, admin)
    result = body["data"]["setRegionCapacity"]
    assert result == {
        "__typename": "RegionCapacity",
        "region": region,
        "capacityKw": 1234.5,
        "version": 2,
        "changed": True,
        "applied": True,
    }
    assert capacity_w(settings, region) == 1_234_500.0

    same = await gql(client, SET, {"r": region, "kw": 1234.5}, admin)
    assert same["data"]["setRegionCapacity"]["changed"] is False

    bad = await gql(client, SET, {"r": region, "kw": -3.0}, admin)
    assert bad["data"]["setRegionCapacity"] == {
        "__typename": "ValidationError",
        "code": "VALIDATION",
        "fields": [{"field": "kw", "rule": "positive"}],
    }
    for role in (Role.OPERATOR, Role.VIEWER, Role.AUDITOR):
        refused = await gql(client, SET, {"r": region, "kw": 1.0}, auth(role))
        assert refused["data"]["setRegionCapacity"]["__typename"] == "ForbiddenError"
    assert capacity_w(settings, region) == 1_234_500.0

    book = TariffBook(env=settings.database.eventsourcing_env())
    try:
        entries = history_of([book], region)
    finally:
        book.close()
    assert [e.type for e in entries] == ["Created", "CapacitySet"]
    assert {e.actor for e in entries} == {"cap-admin"}


async def test_capacity_events_are_relayed_to_hes_events(settings: Settings) -> None:
    region = new_region()
    book = TariffBook(env=settings.database.eventsourcing_env())
    try:
        book.set_region_capacity(region, 800, ctx("ann", Role.ADMIN))
    finally:
        book.close()
    nc = await nats.connect(settings.nats.url or "")
    try:
        relay = EventRelay(
            nc,
            settings.database.eventsourcing_env(),
            application_name="tariffs",
            source=settings.events_source,
            prefix=settings.nats.prefix,
        )
        await relay.relay_available()
        relay.close()
        subject = event_subject(settings.nats.prefix, "region", "CapacitySet")
        sub = await nc.jetstream().subscribe(
            subject,
            stream=settings.nats.stream("HES_EVENTS"),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        wanted = str(region_id(region))
        found: dict[str, Any] | None = None
        while found is None:
            event = decode_cloudevent((await sub.next_msg(timeout=5)).data)
            if event["subject"] == wanted:
                found = event
        await sub.unsubscribe()
    finally:
        await nc.close()
    assert found["type"] == "hes.region.CapacitySet.v1"
    assert found["data"]["region"] == region and found["data"]["capacity_w"] == 800_000.0
    assert found["actor"] == "ann"
