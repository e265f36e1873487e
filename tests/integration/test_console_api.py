"""What the operator console needs from the API: who is calling (`me`), the dashboard (query
and live subscription), each alert's changes live, a meter's newest values and collection
tasks, the kept `hes audit verify` result, serial search, the tariff tier; and the pages and
files the API serves for browsers (no CDN, strict CSP, licences beside vendored files)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import websockets
from litestar.testing import AsyncTestClient
from psycopg import sql
from typer.testing import CliRunner
from websockets.typing import Subprotocol

from api.app import create_app
from api.auth import TokenService
from api.graphql.tariffs import Tariff
from api.web.pages import STATIC_DIR, page_csp
from bootstrap.container import Container
from commands.alerts import AlertDesk
from commands.context import SYSTEM, CommandContext, Role
from config.settings import Settings
from domain.alert import Severity
from domain.pricing import DEFAULT_TIERS
from hes.cli import app as cli
from projections.tariffs_queries import TariffRow
from tests.conftest import ingest_headers, new_serial
from tests.integration.customer_support import ensure_customers
from tests.integration.dlms_support import scalar
from tests.integration.gql import REGISTER, gql, meter_input
from tests.integration.live import serve
from tests.integration.test_audit import cli_env
from tests.integration.test_graphql_alerts import decision

pytestmark = pytest.mark.integration
Client = AsyncTestClient[Any]
Auth = Callable[..., dict[str, str]]
RUN = uuid.uuid4().hex[:6].upper()
ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = [Subprotocol("graphql-transport-ws")]

ME = "{ me { subject roles scopes customerAccount credential apiKeyPrefix expiresAt allowed } }"
DASHBOARD = """{ dashboard { at meters { active online offline neverSeen decommissioned }
  readings { windowStart thisWindow lastWindow } openAlerts { severity open acknowledged }
  regions { region capacityKw loadPct powerKw loadBucket
            meters { active online offline neverSeen decommissioned }
            tariff { region effectivePrice currency } } } }"""


@pytest.fixture(scope="module")
def desk(settings: Settings) -> Iterator[AlertDesk]:
    app = AlertDesk(env=settings.database.eventsourcing_env())
    yield app
    app.close()


async def _register(client: Client, auth: Auth, serial: str, region: str, **kw: Any) -> str:
    made = await gql(
        client, REGISTER, {"input": meter_input(serial, region=region, **kw)}, auth(Role.OPERATOR)
    )
    assert made["data"]["registerMeter"]["__typename"] == "Meter", made
    return str(made["data"]["registerMeter"]["id"])


async def _meter_command(client: Client, headers: dict[str, str], call: str, meter: str) -> None:
    """Run a meter mutation such as ``assignCustomer(id: $id, …)``; it must succeed."""
    name = call.split("(")[0]
    done = await gql(
        client, f"mutation($id: ID!) {{ {call} {{ __typename }} }}", {"id": meter}, headers
    )
    assert done["data"][name]["__typename"] == "Meter", done


async def _readings(client: Client, items: list[dict[str, Any]]) -> None:
    """Post gateway readings; every value must be accepted."""
    posted = await client.post(
        "/telemetry/batch",
        content=json.dumps(items),
        headers=ingest_headers(client.app.state.tokens),
    )
    expected = sum(len(i) - 2 for i in items)  # each field but meter_id and timestamp
    assert posted.json()["accepted"] == expected, posted.text


@pytest.fixture(scope="module")
def server(settings: Settings, tokens: TokenService, projection: Any) -> Iterator[str]:
    """The app on a real port: subscriptions run on the server's loop, as in production."""
    with serve(create_app(Container(settings), tokens)) as address:
        yield address


class Live:
    """One graphql-transport-ws connection with one subscription on it."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, server: str, headers: dict[str, str], query: str) -> Live:
        ws = await websockets.connect(f"ws://{server}/graphql", subprotocols=PROTOCOL)
        await ws.send(json.dumps({"type": "connection_init", "payload": headers}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        return cls(ws)

    async def next(self, seconds: float = 20.0) -> dict[str, Any]:
        """The next event's data (fails on an error message)."""
        msg = json.loads(await asyncio.wait_for(self.ws.recv(), seconds))
        assert msg["type"] == "next" and not msg["payload"].get("errors"), msg
        data: dict[str, Any] = msg["payload"]["data"]
        return data

    async def error_code(self, seconds: float = 5.0) -> str:
        """The code of the error the subscription ends with."""
        msg = json.loads(await asyncio.wait_for(self.ws.recv(), seconds))
        payload = msg["payload"]
        errors = payload if isinstance(payload, list) else payload.get("errors", [])
        code: str = errors[0]["extensions"]["code"]
        return code

    async def close(self) -> None:
        await self.ws.close()


# -- me ---------------------------------------------------------------------------------


async def test_me_names_the_caller_and_every_door_its_credentials_open(
    client: Client, auth: Auth
) -> None:
    admin = (await gql(client, ME, headers=auth(Role.ADMIN, subject="ada")))["data"]["me"]
    assert admin["subject"] == "ada" and admin["roles"] == ["admin"]
    assert admin["credential"] == "token" and admin["expiresAt"] is not None
    assert {"Mutation.decommissionMeter", "POST /api/v1/imports/meters", "Query.history"} <= set(
        admin["allowed"]
    )
    assert "GET /console" not in admin["allowed"]  # public doors are not listed
    viewer = (await gql(client, ME, headers=auth(Role.VIEWER)))["data"]["me"]
    writes = [d for d in viewer["allowed"] if d.startswith(("Mutation.", "POST ", "PUT "))]
    assert writes and all("NotificationSubscription" in d for d in writes)  # self-service only
    assert {"Query.dashboard", "Subscription.dashboard", "Query.meters"} <= set(viewer["allowed"])
    customer = (await gql(client, ME, headers=auth(Role.CUSTOMER, customer="ACC-ME")))["data"]
    assert customer["me"]["customerAccount"] == "ACC-ME"
    assert "Query.dashboard" not in customer["me"]["allowed"]
    assert "Query.currentTariff" in customer["me"]["allowed"]

    made = await client.post(
        "/api/v1/api-keys",
        json={"name": "console-me", "scopes": [], "roles": ["auditor"]},
        headers=auth(Role.ADMIN),
    )
    assert made.status_code == 201, made.text
    keyed = (await gql(client, ME, headers={"X-API-Key": made.json()["key"]}))["data"]["me"]
    assert keyed["credential"] == "apiKey" and keyed["expiresAt"] is None
    assert keyed["subject"] == f"apikey:{keyed['apiKeyPrefix']}"
    assert "Query.history" in keyed["allowed"]

    anonymous = await gql(client, ME)
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    machine = await gql(client, ME, headers=ingest_headers(client.app.state.tokens))
    assert machine["errors"][0]["extensions"]["code"] == "FORBIDDEN"


# -- dashboard --------------------------------------------------------------------------


async def test_dashboard_counts_reachability_readings_alerts_and_region_load(
    client: Client,
    auth: Auth,
    settings: Settings,
    reading_worker: Any,
    tariffs_worker: Any,
    alerts_worker: Any,
    desk: AlertDesk,
) -> None:
    region = f"DASH{RUN}"
    reporting = new_serial("DR")
    await _register(client, auth, reporting, region)
    await _register(client, auth, new_serial("DN"), region)  # never reports
    gone = await _register(client, auth, new_serial("DD"), region)
    await _meter_command(
        client, auth(Role.ADMIN), 'decommissionMeter(id: $id, reason: "gone")', gone
    )
    now = datetime.now(UTC).replace(microsecond=0)
    await _readings(
        client,
        [
            {"meter_id": reporting, "timestamp": (now - timedelta(seconds=s)).isoformat(),
             "power_kw": 2.0, "voltage": 230.0}
            for s in (30, 60)
        ],
    )  # fmt: skip
    created = await gql(
        client,
        'mutation($r: String!) { createTariff(input: {region: $r, currency: "EUR",'
        ' basePrice: "0.25", timezone: "UTC"}) { __typename } }',
        {"r": region},
        auth(Role.ADMIN),
    )
    assert created["data"]["createTariff"]["__typename"] == "Tariff"
    await asyncio.to_thread(
        desk.raise_or_recur,
        decision(region, f"CONSOLE:{region}", Severity.CRITICAL),
        CommandContext(actor=SYSTEM),
    )

    async def shown() -> dict[str, Any] | None:
        body = await gql(client, DASHBOARD, headers=auth(Role.VIEWER))
        data: dict[str, Any] = body["data"]["dashboard"]
        row = next((r for r in data["regions"] if r["region"] == region), None)
        critical = next(a for a in data["openAlerts"] if a["severity"] == "CRITICAL")
        ready = (
            row is not None
            and row["meters"]["online"] == 1
            and row["tariff"] is not None
            and row["loadPct"] is not None
            and critical["open"] >= 1
        )
        return data if ready else None

    deadline = datetime.now(UTC) + timedelta(seconds=30)
    data = await shown()
    while data is None:
        assert datetime.now(UTC) < deadline, await gql(client, DASHBOARD, headers=auth(Role.VIEWER))
        await asyncio.sleep(0.5)
        data = await shown()
    row = next(r for r in data["regions"] if r["region"] == region)
    assert row["meters"] == {
        "active": 2, "online": 1, "offline": 0, "neverSeen": 1, "decommissioned": 1,
    }  # fmt: skip
    assert row["powerKw"] == pytest.approx(2.0) and row["capacityKw"] > 0
    assert row["tariff"]["effectivePrice"] == "0.2500" and row["tariff"]["currency"] == "EUR"
    assert [a["severity"] for a in data["openAlerts"]] == ["CRITICAL", "HIGH", "MEDIUM", "LOW"]
    totals = data["meters"]
    for key in ("active", "online", "offline", "neverSeen", "decommissioned"):
        assert totals[key] == sum(r["meters"][key] for r in data["regions"]), key
    assert data["readings"]["thisWindow"] + data["readings"]["lastWindow"] >= 4
    start = datetime.fromisoformat(data["readings"]["windowStart"])
    assert start.minute % 15 == 0 and start <= datetime.now(UTC)

    customer = await gql(client, DASHBOARD, headers=auth(Role.CUSTOMER, customer="ACC-X"))
    assert customer["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_dashboard_subscription_pushes_at_once_and_after_each_alert_event(
    server: str, auth: Auth, alerts_worker: Any, event_relays: Any, desk: AlertDesk
) -> None:
    region = f"LIVE{RUN}"
    live = await Live.open(
        server,
        auth(Role.OPERATOR),
        "subscription { dashboard(everySeconds: 300) { at openAlerts { severity open } } }",
    )
    try:
        first = await live.next(5)
        before = next(a["open"] for a in first["dashboard"]["openAlerts"] if a["severity"] == "LOW")
        await asyncio.to_thread(
            desk.raise_or_recur,
            decision(region, f"CONSOLE-LIVE:{region}", Severity.LOW),
            CommandContext(actor=SYSTEM),
        )
        # long before the 300 s tick: the alert event wakes it
        pushed = await live.next(20)
        after = next(a["open"] for a in pushed["dashboard"]["openAlerts"] if a["severity"] == "LOW")
        assert after == before + 1
    finally:
        await live.close()
    bad = await Live.open(
        server, auth(Role.VIEWER), "subscription { dashboard(everySeconds: 1) { at } }"
    )
    assert await bad.error_code() == "BAD_USER_INPUT"
    await bad.close()
    refused = await Live.open(
        server, auth(Role.CUSTOMER, customer="ACC-D"), "subscription { dashboard { at } }"
    )
    assert await refused.error_code() == "FORBIDDEN"
    await refused.close()


async def test_alert_changed_pushes_every_change_of_the_regions_alerts(
    server: str, client: Client, auth: Auth, alerts_worker: Any, event_relays: Any, desk: AlertDesk
) -> None:
    region = f"CHG{RUN}"
    changes = await Live.open(
        server,
        auth(Role.VIEWER),
        "subscription { alertChanged(region: "
        + json.dumps(region.lower())
        + ") { id status version region } }",
    )
    raises = await Live.open(server, auth(Role.VIEWER), "subscription { alertRaised { id } }")
    elsewhere = await Live.open(
        server, auth(Role.VIEWER), 'subscription { alertChanged(region: "nowhere") { id } }'
    )
    try:
        await asyncio.sleep(0.5)  # bound before the events flow
        outcome = await asyncio.to_thread(
            desk.raise_or_recur,
            decision(region, f"CONSOLE-CHG:{region}", Severity.HIGH),
            CommandContext(actor=SYSTEM),
        )
        assert (await changes.next())["alertChanged"] == {
            "id": str(outcome.alert.id), "status": "OPEN", "version": 1, "region": region,
        }  # fmt: skip
        assert (await raises.next())["alertRaised"]["id"] == str(outcome.alert.id)
        acked = await gql(
            client,
            "mutation($id: ID!) { acknowledgeAlert(id: $id) { __typename } }",
            {"id": str(outcome.alert.id)},
            auth(Role.OPERATOR),
        )
        assert acked["data"]["acknowledgeAlert"]["__typename"] == "Alert"
        changed = (await changes.next())["alertChanged"]
        assert changed["status"] == "ACKNOWLEDGED" and changed["version"] == 2
        with pytest.raises(TimeoutError):  # another region's stream stayed quiet
            await elsewhere.next(1.0)
    finally:
        for live in (changes, raises, elsewhere):
            await live.close()


# -- meters -----------------------------------------------------------------------------


async def test_latest_readings_are_the_newest_per_quantity_for_those_who_may_read_the_meter(
    client: Client, auth: Auth, reading_worker: Any, settings: Settings
) -> None:
    ensure_customers(settings, "ACC-LR")
    serial = new_serial("LR")
    meter = await _register(client, auth, serial, f"LR{RUN}")
    await _meter_command(
        client, auth(Role.OPERATOR), 'assignCustomer(id: $id, customerAccount: "ACC-LR")', meter
    )
    now = datetime.now(UTC).replace(microsecond=0)
    await _readings(
        client,
        [
            {"meter_id": serial, "timestamp": (now - timedelta(minutes=m)).isoformat(),
             "voltage": v, "energy_kwh": e}
            for m, v, e in ((20, 228.0, 100.0), (5, 231.5, 100.4))
        ],
    )  # fmt: skip
    query = "query($m: String!) { latestReadings(meter: $m) { quantity { alias unit } ts value } }"
    got: dict[str, Any] = {}
    for _ in range(100):
        body = await gql(client, query, {"m": serial}, auth(Role.VIEWER))
        got = {r["quantity"]["alias"]: r for r in body["data"]["latestReadings"]}
        if {"voltage_l1", "energy_import"} <= set(got):
            break
        await asyncio.sleep(0.2)
    assert got["voltage_l1"]["value"] == 231.5 and got["voltage_l1"]["quantity"]["unit"] == "V"
    assert got["energy_import"]["value"] == pytest.approx(100_400.0)  # Wh
    assert datetime.fromisoformat(got["voltage_l1"]["ts"]) == now - timedelta(minutes=5)
    own = await gql(client, query, {"m": meter}, auth(Role.CUSTOMER, customer="ACC-LR"))
    assert len(own["data"]["latestReadings"]) == 2
    other = await gql(client, query, {"m": serial}, auth(Role.CUSTOMER, customer="ACC-NOT"))
    assert other["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_meter_collection_tasks_show_the_schedulers_plan(
    client: Client, auth: Auth, settings: Settings
) -> None:
    meter = await _register(client, auth, new_serial("CT"), f"CT{RUN}")
    assert settings.database.url is not None
    await asyncio.to_thread(_plan_tasks, settings, meter)
    body = await gql(
        client,
        "query($id: ID!) { meterCollection(id: $id) { task nextDue running lastRunAt"
        " lastOkAt consecutiveFailures } }",
        {"id": meter},
        auth(Role.VIEWER),
    )
    tasks = {t["task"]: t for t in body["data"]["meterCollection"]}
    assert set(tasks) == {"events", "profile", "registers"}
    assert tasks["registers"]["running"] is True and tasks["profile"]["running"] is False
    assert tasks["events"]["consecutiveFailures"] == 2 and tasks["events"]["lastOkAt"] is None
    assert (
        await scalar(
            settings, "SELECT count(*) FROM {s}.dlms_collection_tasks WHERE meter_id = %s", meter
        )
        == 3
    )


def _plan_tasks(settings: Settings, meter: str) -> None:
    import psycopg

    assert settings.database.url is not None
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.dlms_collection_tasks (meter_id, task, next_due, lease_until,"
                " last_run_at, last_ok_at, failures) VALUES"
                " (%(m)s, 'registers', now(), now() + interval '1 minute', now(), now(), 0),"
                " (%(m)s, 'profile', now() + interval '1 day', NULL, NULL, NULL, 0),"
                " (%(m)s, 'events', now() + interval '1 hour', now() - interval '1 minute',"
                "  now() - interval '1 minute', NULL, 2)"
            ).format(sql.Identifier(settings.database.schema)),
            {"m": meter},
        )


async def test_serial_prefix_search_ignores_case_and_takes_wildcards_literally(
    client: Client, auth: Auth
) -> None:
    region = f"PFX{RUN}"
    stem = f"PF{RUN}"
    for suffix in ("A1", "A2", "B1", "_X"):
        await _register(client, auth, f"{stem}{suffix}", region)
    query = (
        "query($p: String!) { meters(filter: {serialPrefix: $p}, first: 50)"
        " { edges { node { serial } } } }"
    )

    async def found(prefix: str) -> list[str]:
        body = await gql(client, query, {"p": prefix}, auth(Role.VIEWER))
        return [e["node"]["serial"] for e in body["data"]["meters"]["edges"]]

    assert await found(f"{stem}a".lower()) == [f"{stem}A1", f"{stem}A2"]
    assert await found(f"{stem}_") == [f"{stem}_X"]  # "_" is a character, not a wildcard
    assert await found(f"{stem}%") == []
    assert await found(stem) == sorted(f"{stem}{s}" for s in ("A1", "A2", "B1", "_X"))


# -- audit ------------------------------------------------------------------------------


async def test_hes_audit_verify_keeps_its_result_for_auditors(
    client: Client, auth: Auth, settings: Settings
) -> None:
    query = (
        "{ lastAuditVerification { ranAt ranBy intact anchors events aggregates checkpoints"
        " seconds logs { log intact events } findings { log kind } } }"
    )
    before = datetime.now(UTC)
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["audit", "verify", "--json"], env=cli_env(settings)
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    body = await gql(client, query, headers=auth(Role.AUDITOR))
    kept = body["data"]["lastAuditVerification"]
    assert kept["intact"] is True and kept["findings"] == [] and kept["anchors"] == 0
    assert datetime.fromisoformat(kept["ranAt"]) >= before - timedelta(seconds=5)
    assert "@" in kept["ranBy"]
    assert kept["events"] == printed["events"] and kept["aggregates"] == printed["aggregates"]
    assert [p["log"] for p in kept["logs"]] == [p["log"] for p in printed["logs"]]
    denied = await gql(client, query, headers=auth(Role.VIEWER))
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"


# -- tariffs ----------------------------------------------------------------------------


def test_tariff_tier_is_the_highest_the_recorded_load_reaches() -> None:
    def tier(load: float | None) -> Any:
        row = TariffRow(
            region="T", currency="EUR", base_price=Decimal("0.2"), tiers=DEFAULT_TIERS, tou=(),
            timezone="UTC", min_change_pct=Decimal(1), load_price=Decimal("0.2"), load_pct=load,
            load_bucket=None, override=None, version=1, updated_at=datetime.now(UTC),
        )  # fmt: skip
        return Tariff.from_row(row).load_tier

    assert tier(None) is None and tier(59.9) is None
    assert (tier(60.0).threshold_pct, tier(60.0).surcharge_pct) == (60.0, "10")
    assert tier(85.0).threshold_pct == 80.0
    assert tier(140.0).surcharge_pct == "35"


# -- pages for browsers -------------------------------------------------------------------


async def test_console_page_has_a_strict_csp_naming_its_import_map(client: Client) -> None:
    page = await client.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert csp == page_csp(page.text)
    assert "'unsafe-inline'" not in csp and "'sha256-" in csp and "unpkg" not in csp
    assert page.headers["cache-control"] == "no-cache"
    # every file the console, GraphiQL and Swagger pages name is served from here
    referenced = set(re.findall(r'"(/static/[^"]+)"', page.text))
    graphiql = (await client.get("/graphql", headers={"Accept": "text/html"})).text
    referenced |= set(re.findall(r'"(/static/[^"]+)"', graphiql))
    swagger = (await client.get("/schema")).text
    assert "cdn." not in swagger and "unpkg" not in swagger
    referenced |= set(re.findall(r"""['"](/static/[^'"]+)['"]""", swagger))
    assert len(referenced) >= 12, referenced
    for path in sorted(referenced):
        answer = await client.get(path)
        assert answer.status_code == 200, path
    assert (await client.get("/static/../pages.py")).status_code == 404


def test_our_browser_files_name_no_outside_address_and_vendored_ones_carry_licences() -> None:
    ours = [
        p
        for p in STATIC_DIR.rglob("*")
        if p.is_file() and "vendor" not in p.relative_to(STATIC_DIR).parts
    ]
    assert len(ours) > 10
    for path in ours:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), path
    vendored = [d for d in (STATIC_DIR / "vendor").iterdir() if d.is_dir()]
    vendored.append(ROOT / "tests" / "browser" / "vendor" / "axe-core")
    assert len(vendored) >= 9
    script = (ROOT / "api" / "web" / "vendor.sh").read_text(encoding="utf-8")
    docs = (ROOT / "docs" / "console.md").read_text(encoding="utf-8")
    for folder in vendored:
        names = {p.name for p in folder.iterdir()}
        assert any(n.startswith("LICENSE") for n in names), folder
        package = (folder / "VERSION").read_text().strip()
        assert package in script, package  # re-fetched at this pinned version
        assert package in docs, package  # and listed with its licence


async def test_static_files_and_the_console_do_not_count_against_the_rate_limit(
    settings: Settings, tokens: Any
) -> None:

    from api.app import create_app
    from bootstrap.container import Container

    strict = settings.replace(rate_limit_per_minute=2)
    async with AsyncTestClient(app=create_app(Container(strict), tokens)) as limited:
        for _ in range(6):
            assert (await limited.get("/console")).status_code == 200
            assert (await limited.get("/static/console/app.js")).status_code == 200
        codes = [(await limited.get("/api/v1/meters/x/intervals")).status_code for _ in range(4)]
        assert 429 in codes
