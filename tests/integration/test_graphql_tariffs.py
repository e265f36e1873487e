"""GraphQL tariffs through the real app, PostgreSQL event store and tariffs projection."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from bootstrap.relay import SupervisedRelay
from bootstrap.workers import SupervisedProjection
from commands.context import SYSTEM, CommandContext, Role
from commands.tariffs import TariffBook
from config.settings import Settings
from tests.conftest import new_serial
from tests.integration.customer_support import ensure_customers
from tests.integration.gql import REGISTER, gql, meter_input

pytestmark = pytest.mark.integration

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Any]

TARIFF_FIELDS = """
  ... on Tariff { region currency basePrice loadPrice loadPct effectivePrice timezone
                  minChangePct version tiers { thresholdPct surchargePct }
                  override { price reason author expiresAt active } }
  ... on ValidationError { code message fields { field rule message } }
  ... on NotFoundError { code message }
  ... on ConflictError { code message }
  ... on ForbiddenError { code message }
"""
CREATE = (
    "mutation($input: CreateTariffInput!, $key: String) {"
    " createTariff(input: $input, idempotencyKey: $key) { __typename " + TARIFF_FIELDS + " } }"
)
OVERRIDE = (
    "mutation($r: String!, $p: String!, $why: String!, $exp: DateTime!) {"
    " applyTariffOverride(region: $r, price: $p, reason: $why, expiresAt: $exp)"
    " { __typename " + TARIFF_FIELDS + " } }"
)
CLEAR = (
    "mutation($r: String!, $why: String!) { clearTariffOverride(region: $r, reason: $why)"
    " { __typename " + TARIFF_FIELDS + " } }"
)
CURRENT = (
    "query($r: String!) { currentTariff(region: $r) { region effectivePrice loadPrice"
    " override { price active } } }"
)
HISTORY = (
    "query($r: String!, $f: DateTime!, $t: DateTime!) { tariffHistory(region: $r, from: $f,"
    " to: $t) { region at price kind loadPct position } }"
)


def new_region() -> str:
    """A region name no other test uses."""
    return f"R-{uuid.uuid4().hex[:8]}"


def tariff_input(region: str, **overrides: Any) -> dict[str, Any]:
    """A valid createTariff input for ``region``."""
    return {
        "region": region,
        "currency": "EUR",
        "basePrice": "0.2500",
        "timezone": "Europe/Amsterdam",
        **overrides,
    }


async def create(client: Client, auth: Auth, region: str, **overrides: Any) -> dict[str, Any]:
    """Create a tariff as admin and return the mutation's result."""
    body = await gql(client, CREATE, {"input": tariff_input(region, **overrides)}, auth(Role.ADMIN))
    result: dict[str, Any] = body["data"]["createTariff"]
    return result


async def history(client: Client, auth: Auth, region: str) -> list[dict[str, Any]]:
    """The region's whole price history as staff sees it."""
    now = datetime.now(UTC)
    body = await gql(
        client,
        HISTORY,
        {
            "r": region,
            "f": (now - timedelta(days=1)).isoformat(),
            "t": (now + timedelta(days=1)).isoformat(),
        },
        auth(Role.VIEWER),
    )
    rows: list[dict[str, Any]] = body["data"]["tariffHistory"]
    return rows


def expiry(hours: int = 2) -> str:
    """An ISO timestamp ``hours`` from now."""
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


async def test_create_then_list_and_read_current(
    client: Client, auth: Auth, tariffs_worker: SupervisedProjection
) -> None:
    region = new_region()
    created = await create(client, auth, region)
    assert created["__typename"] == "Tariff"
    assert created["region"] == region
    assert Decimal(created["basePrice"]) == Decimal("0.25")
    assert Decimal(created["effectivePrice"]) == Decimal("0.25")
    assert created["version"] == 1
    assert [t["thresholdPct"] for t in created["tiers"]] == [60.0, 80.0, 90.0]

    listed = await gql(client, "{ tariffs { region currency } }", None, auth(Role.OPERATOR))
    assert {"region": region, "currency": "EUR"} in listed["data"]["tariffs"]

    current = await gql(client, CURRENT, {"r": region.lower()}, auth(Role.VIEWER))
    assert current["data"]["currentTariff"]["region"] == region
    rows = await history(client, auth, region)
    assert [r["kind"] for r in rows] == ["base"]
    assert Decimal(rows[0]["price"]) == Decimal("0.25")


async def test_override_applies_then_clears_with_history(
    client: Client, auth: Auth, tariffs_worker: SupervisedProjection
) -> None:
    region = new_region()
    await create(client, auth, region)
    applied = await gql(
        client,
        OVERRIDE,
        {"r": region, "p": "0.4", "why": "grid emergency", "exp": expiry()},
        auth(Role.ADMIN, subject="alice"),
    )
    result = applied["data"]["applyTariffOverride"]
    assert result["__typename"] == "Tariff"
    assert result["override"]["author"] == "alice"
    assert result["override"]["active"] is True
    assert Decimal(result["effectivePrice"]) == Decimal("0.4")

    current = await gql(client, CURRENT, {"r": region}, auth(Role.OPERATOR))
    tariff = current["data"]["currentTariff"]
    assert Decimal(tariff["effectivePrice"]) == Decimal("0.4")
    assert Decimal(tariff["loadPrice"]) == Decimal("0.25")

    rows = await history(client, auth, region)
    assert [r["kind"] for r in rows] == ["base", "override"]
    assert Decimal(rows[1]["price"]) == Decimal("0.4")
    positions = [int(r["position"]) for r in rows]
    assert positions[0] < positions[1]

    cleared = await gql(client, CLEAR, {"r": region, "why": "over"}, auth(Role.ADMIN))
    assert cleared["data"]["clearTariffOverride"]["override"] is None
    assert Decimal(cleared["data"]["clearTariffOverride"]["effectivePrice"]) == Decimal("0.25")
    rows = await history(client, auth, region)
    assert [r["kind"] for r in rows] == ["base", "override", "override-cleared"]
    assert Decimal(rows[2]["price"]) == Decimal("0.25")


async def test_two_percent_rule_through_system_actor(
    client: Client,
    auth: Auth,
    settings: Settings,
    tariffs_worker: SupervisedProjection,
    event_relays: list[SupervisedRelay],
) -> None:
    region = new_region()
    tiers = [
        {"thresholdPct": 60.0, "surchargePct": "10"},
        {"thresholdPct": 80.0, "surchargePct": "11"},
        {"thresholdPct": 90.0, "surchargePct": "35"},
    ]
    await create(client, auth, region, basePrice="1.0000", tiers=tiers)
    book = TariffBook(env=settings.database.eventsourcing_env())
    try:
        # A load price is dated by its window, so take windows after the tariff's creation.
        bucket = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
        ctx = CommandContext(actor=SYSTEM)
        up = book.apply_load(region, 70.0, bucket, ctx)
        assert up.changed and up.notification_id is not None
        rows = await history_with(client, auth, region, 2)
        assert rows[-1]["kind"] == "load"
        assert Decimal(rows[-1]["price"]) == Decimal("1.1")
        assert rows[-1]["loadPct"] == 70.0
        assert int(rows[-1]["position"]) == up.notification_id

        # 1.10 -> 1.11 is a 0.9 % move: below the 2 % minimum, so nothing is recorded.
        small = book.apply_load(region, 85.0, bucket + timedelta(minutes=15), ctx)
        assert not small.changed and small.notification_id is None
        big = book.apply_load(region, 95.0, bucket + timedelta(minutes=30), ctx)
        assert big.changed and big.notification_id is not None
        rows = await history_with(client, auth, region, 3)
        assert [r["kind"] for r in rows] == ["base", "load", "load"]
        assert [Decimal(r["price"]) for r in rows] == [Decimal(1), Decimal("1.1"), Decimal("1.35")]
        assert int(rows[-1]["position"]) == big.notification_id
        # The engine's change reaches the API's price cache through the relayed event.
        for _ in range(100):
            current = await gql(client, CURRENT, {"r": region}, auth(Role.VIEWER))
            if Decimal(current["data"]["currentTariff"]["effectivePrice"]) == Decimal("1.35"):
                break
            await asyncio.sleep(0.1)
        assert Decimal(current["data"]["currentTariff"]["effectivePrice"]) == Decimal("1.35")
    finally:
        book.close()


async def history_with(client: Client, auth: Auth, region: str, count: int) -> list[dict[str, Any]]:
    """The region's history once the projection has recorded ``count`` prices."""
    for _ in range(200):
        rows = await history(client, auth, region)
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"history of {region} never reached {count} rows")


async def test_typed_errors(
    client: Client, auth: Auth, tariffs_worker: SupervisedProjection
) -> None:
    admin = auth(Role.ADMIN)
    bad = await gql(client, CREATE, {"input": tariff_input(new_region(), basePrice="abc")}, admin)
    invalid = bad["data"]["createTariff"]
    assert invalid["__typename"] == "ValidationError"
    assert [f["field"] for f in invalid["fields"]] == ["basePrice"]

    rules = await gql(
        client,
        CREATE,
        {"input": tariff_input(new_region(), currency="eur", timezone="Mars/Base")},
        admin,
    )
    fields = {f["field"] for f in rules["data"]["createTariff"]["fields"]}
    assert fields == {"currency", "timezone"}

    missing = await gql(
        client, OVERRIDE, {"r": new_region(), "p": "0.3", "why": "x", "exp": expiry()}, admin
    )
    assert missing["data"]["applyTariffOverride"]["__typename"] == "NotFoundError"

    region = new_region()
    await create(client, auth, region)
    again = await create(client, auth, region)
    assert again["__typename"] == "ConflictError"
    nothing = await gql(client, CLEAR, {"r": region, "why": "none"}, admin)
    assert nothing["data"]["clearTariffOverride"]["__typename"] == "ConflictError"
    past = await gql(
        client,
        OVERRIDE,
        {"r": region, "p": "0.3", "why": "late", "exp": expiry(-1)},
        admin,
    )
    assert past["data"]["applyTariffOverride"]["__typename"] == "ValidationError"
    assert past["data"]["applyTariffOverride"]["fields"][0]["field"] == "expiresAt"

    key = f"k-{uuid.uuid4().hex}"
    first = await gql(client, CREATE, {"input": tariff_input(new_region()), "key": key}, admin)
    assert first["data"]["createTariff"]["__typename"] == "Tariff"
    replay = await gql(
        client,
        CREATE,
        {"input": tariff_input(first["data"]["createTariff"]["region"]), "key": key},
        admin,
    )
    assert replay["data"]["createTariff"]["__typename"] == "Tariff"
    assert replay["data"]["createTariff"]["version"] == 1


async def test_non_admin_mutations_are_forbidden(
    client: Client, auth: Auth, tariffs_worker: SupervisedProjection
) -> None:
    region = new_region()
    await create(client, auth, region)
    for role in (Role.OPERATOR, Role.VIEWER, Role.CUSTOMER):
        headers = auth(role, customer="ACC-F") if role is Role.CUSTOMER else auth(role)
        made = await gql(client, CREATE, {"input": tariff_input(new_region())}, headers)
        assert made["data"]["createTariff"]["__typename"] == "ForbiddenError"
        fixed = await gql(
            client, OVERRIDE, {"r": region, "p": "0.3", "why": "x", "exp": expiry()}, headers
        )
        assert fixed["data"]["applyTariffOverride"]["__typename"] == "ForbiddenError"
        cleared = await gql(client, CLEAR, {"r": region, "why": "x"}, headers)
        assert cleared["data"]["clearTariffOverride"]["__typename"] == "ForbiddenError"
    rows = await history(client, auth, region)
    assert [r["kind"] for r in rows] == ["base"]


async def test_customer_sees_only_own_region(
    client: Client, auth: Auth, tariffs_worker: SupervisedProjection, settings: Settings
) -> None:
    mine, other = new_region(), new_region()
    await create(client, auth, mine)
    await create(client, auth, other)
    account = f"ACC-{uuid.uuid4().hex[:8]}"
    ensure_customers(settings, account)
    registered = await gql(
        client,
        REGISTER,
        {"input": meter_input(new_serial(), region=mine)},
        auth(Role.OPERATOR),
    )
    meter = registered["data"]["registerMeter"]
    assert meter["__typename"] == "Meter"
    commissioned = await gql(
        client,
        "mutation($id: ID!, $a: String) { commissionMeter(id: $id, location: {address: "
        '"2 Grid Rd"}, customerAccount: $a) { __typename } }',
        {"id": meter["id"], "a": account},
        auth(Role.OPERATOR),
    )
    assert commissioned["data"]["commissionMeter"]["__typename"] == "Meter"

    customer = auth(Role.CUSTOMER, customer=account)
    own = await gql(client, CURRENT, {"r": mine}, customer)
    assert own["data"]["currentTariff"]["region"] == mine
    foreign = await gql(client, CURRENT, {"r": other}, customer)
    assert foreign["data"]["currentTariff"] is None
    stranger = await gql(client, CURRENT, {"r": mine}, auth(Role.CUSTOMER, customer="ACC-X"))
    assert stranger["data"]["currentTariff"] is None

    listed = await gql(client, "{ tariffs { region } }", None, customer)
    assert listed["data"] is None
    assert listed["errors"][0]["extensions"]["code"] == "FORBIDDEN"
