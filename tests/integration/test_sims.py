"""SIM inventory end to end: PostgreSQL event store, projection, GraphQL, REST, CSV, relay."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nats
import pytest
from litestar.testing import AsyncTestClient
from nats.js.api import DeliverPolicy

from adapters.nats.cloudevents import decode_cloudevent
from adapters.nats.event_relay import EventRelay
from adapters.nats.subjects import event_subject
from bootstrap.workers import SupervisedProjection
from commands.audit import history_of
from commands.context import Actor, CommandContext, Role
from commands.meters import MeterRegistry
from commands.sims import SimInventory
from config.settings import Settings
from domain.errors import Conflict, Forbidden
from domain.sim_card import sim_id
from domain.sim_rules import SimSpec, SimStatus, luhn_digit
from domain.values import ConnectionProfile, MeterSpec
from tests.conftest import new_serial
from tests.integration.gql import REGISTER, gql, meter_input

pytestmark = pytest.mark.integration

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Any]

SIM_FIELDS = """
  ... on SimCard { iccid status provider apn dataLimit ipAddress meterSerial version }
  ... on ValidationError { code message fields { field rule message } }
  ... on NotFoundError { code message }
  ... on ConflictError { code message }
  ... on ForbiddenError { code message }
"""
ADD = (
    "mutation($input: SimCardInput!, $key: String) { addSimCard(input: $input,"
    " idempotencyKey: $key) { __typename " + SIM_FIELDS + " } }"
)
ACTIVATE = "mutation($i: String!) { activateSimCard(iccid: $i) { __typename " + SIM_FIELDS + " } }"
SUSPEND = (
    'mutation($i: String!) { suspendSimCard(iccid: $i, reason: "unpaid") { __typename '
    + SIM_FIELDS
    + " } }"
)
TERMINATE = (
    'mutation($i: String!) { terminateSimCard(iccid: $i, reason: "lost") { __typename '
    + SIM_FIELDS
    + " } }"
)
INSTALL = (
    "mutation($m: String!, $i: String!) { installSim(meterSerial: $m, iccid: $i) { __typename "
    + SIM_FIELDS
    + " } }"
)
REMOVE = (
    'mutation($m: String!) { removeSim(meterSerial: $m, reason: "swap") { __typename '
    + SIM_FIELDS
    + " } }"
)
METER_SIM = (
    "query($s: String!) { meterSim(serial: $s) { iccid status meterSerial meter { serial } } }"
)


def new_iccid() -> str:
    """A valid ICCID (19 digits, Luhn check) no other test uses."""
    body = "8944" + "".join(random.choices("0123456789", k=14))
    return body + luhn_digit(body)


def new_provider() -> str:
    """A provider name no other test uses (for filtering)."""
    return f"Prov{uuid.uuid4().hex[:10]}"


def ctx(subject: str, role: Role = Role.OPERATOR, key: str | None = None) -> CommandContext:
    """Command context of one caller, with the correlation id ``corr-<subject>``."""
    return CommandContext(
        actor=Actor(subject=subject, roles=frozenset({role})),
        correlation_id=f"corr-{subject}",
        idempotency_key=key,
    )


def register_meter(settings: Settings) -> str:
    """A newly registered meter's serial."""
    serial = new_serial("SIMM")
    registry = MeterRegistry(env=settings.database.eventsourcing_env())
    try:
        spec = MeterSpec(
            serial=serial,
            manufacturer="Acme",
            model="S1",
            firmware="1",
            phases=1,
            region="R",
            area="A",
            connection=ConnectionProfile(host="127.0.0.1"),
        )
        registry.register_meter(spec, ctx("reg"))
    finally:
        registry.close()
    return serial


async def test_commands_record_actor_stamped_events_and_the_projection_writes_the_row(
    settings: Settings, sims_worker: SupervisedProjection, client: Client
) -> None:
    queries = client.app.state.container.sim_queries
    inventory = SimInventory(env=settings.database.eventsourcing_env())
    iccid, provider = new_iccid(), new_provider()
    try:
        spec = SimSpec(iccid=iccid, provider=provider, imsi="234150123456789", data_limit_mb=10)
        added = inventory.add_sim(spec, ctx("olga", key="add-1"))
        again = inventory.add_sim(spec, ctx("olga", key="add-1"))
        assert again.replayed and again.sim.version == added.sim.version == 1
        with pytest.raises(Conflict, match="already in the inventory"):
            inventory.add_sim(spec, ctx("olga"))
        inventory.activate_sim(iccid, None, ctx("oscar"))
        inventory.update_sim(iccid, ctx("otto"), apn="iot.example", ip_address="127.0.0.9")
        last = inventory.suspend_sim(iccid, "unpaid", ctx("olga"))
        assert not inventory.suspend_sim(iccid, "again", ctx("olga")).changed
        with pytest.raises(Forbidden, match="terminateSim needs role admin"):
            inventory.terminate_sim(iccid, "lost", ctx("otto"))
        with pytest.raises(Forbidden):
            inventory.add_sim(spec, ctx("vera", Role.VIEWER))
        entries = history_of([inventory], iccid)  # located by ICCID, as `hes audit` does
    finally:
        inventory.close()
    assert [(e.type, e.actor, e.correlation_id) for e in entries] == [
        ("AddedToStock", "olga", "corr-olga"),
        ("Activated", "oscar", "corr-oscar"),
        ("ServiceUpdated", "otto", "corr-otto"),
        ("Suspended", "olga", "corr-olga"),
    ]
    assert last.notification_id is not None
    assert await queries.wait_for(last.notification_id, 10)
    row = await queries.by_iccid(iccid)
    assert row is not None
    assert (row.status, row.apn, row.ip_address, row.data_limit_mb, row.imsi) == (
        SimStatus.SUSPENDED,
        "iot.example",
        "127.0.0.9",
        10,
        "234150123456789",
    )
    assert row.activation_date is not None and row.meter_serial is None


async def test_install_and_remove_over_graphql_with_roles(
    client: Client, auth: Auth, sims_worker: SupervisedProjection
) -> None:
    operator, admin, viewer = auth(Role.OPERATOR), auth(Role.ADMIN), auth(Role.VIEWER)
    serial = new_serial("SIMG")
    made = await gql(client, REGISTER, {"input": meter_input(serial)}, operator)
    assert made["data"]["registerMeter"]["__typename"] == "Meter", made
    first, second = new_iccid(), new_iccid()
    provider = new_provider()
    for iccid in (first, second):
        added = await gql(client, ADD, {"input": {"iccid": iccid, "provider": provider}}, operator)
        assert added["data"]["addSimCard"]["status"] == "IN_STOCK", added

    refused = await gql(client, ADD, {"input": {"iccid": new_iccid(), "provider": "X"}}, viewer)
    assert refused["data"]["addSimCard"]["__typename"] == "ForbiddenError"
    bad = await gql(
        client,
        ADD,
        {
            "input": {
                "iccid": first[:-1] + str((int(first[-1]) + 1) % 10),
                "provider": "X",
                "ipAddress": "300.0.0.1",
                "dataLimit": -1,
            }
        },
        operator,
    )
    assert bad["data"]["addSimCard"]["__typename"] == "ValidationError"
    assert [(f["field"], f["rule"]) for f in bad["data"]["addSimCard"]["fields"]] == [
        ("iccid", "luhn"),
        ("ipAddress", "format"),
        ("dataLimit", "non-negative"),
    ]

    in_stock = await gql(client, INSTALL, {"m": serial, "i": first}, operator)
    assert in_stock["data"]["installSim"]["__typename"] == "ConflictError"
    assert "activate it first" in in_stock["data"]["installSim"]["message"]
    for iccid in (first, second):
        await gql(client, ACTIVATE, {"i": iccid}, operator)
    installed = await gql(client, INSTALL, {"m": serial, "i": first}, operator)
    assert installed["data"]["installSim"]["meterSerial"] == serial, installed
    taken = await gql(client, INSTALL, {"m": serial, "i": second}, operator)
    assert taken["data"]["installSim"]["__typename"] == "ConflictError"
    assert f"already has SIM {first}" in taken["data"]["installSim"]["message"]
    busy = await gql(client, TERMINATE, {"i": first}, admin)
    assert "remove it first" in busy["data"]["terminateSimCard"]["message"]

    shown = await gql(client, METER_SIM, {"s": serial.lower()}, viewer)
    assert shown["data"]["meterSim"] == {
        "iccid": first,
        "status": "ACTIVE",
        "meterSerial": serial,
        "meter": {"serial": serial},
    }
    listed = await gql(
        client,
        "query($p: String) { simCards(filter: {provider: $p, status: ACTIVE}, first: 1) {"
        " edges { node { iccid meterSerial } } pageInfo { hasNextPage endCursor } } }",
        {"p": provider},
        viewer,
    )
    page = listed["data"]["simCards"]
    assert page["pageInfo"]["hasNextPage"] is True
    assert [e["node"]["iccid"] for e in page["edges"]] == [min(first, second)]
    counts = await gql(client, "{ simCardCounts { provider status count } }", {}, viewer)
    assert {"provider": provider, "status": "ACTIVE", "count": 2} in counts["data"]["simCardCounts"]
    customer = await gql(client, METER_SIM, {"s": serial}, auth(Role.CUSTOMER, customer="A-1"))
    assert customer["data"] is None or customer["data"]["meterSim"] is None
    assert customer["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    removed = await gql(client, REMOVE, {"m": serial}, operator)
    assert removed["data"]["removeSim"]["meterSerial"] is None, removed
    empty = await gql(client, REMOVE, {"m": serial}, operator)
    assert "has no SIM installed" in empty["data"]["removeSim"]["message"]
    as_operator = await gql(client, TERMINATE, {"i": first}, operator)
    assert as_operator["data"]["terminateSimCard"]["__typename"] == "ForbiddenError"
    ended = await gql(client, TERMINATE, {"i": first}, admin)
    assert ended["data"]["terminateSimCard"]["status"] == "TERMINATED"
    revived = await gql(client, ACTIVATE, {"i": first}, operator)
    assert (
        "TERMINATED → ACTIVE is not an allowed transition"
        in (revived["data"]["activateSimCard"]["message"])
    )
    moved = await gql(client, INSTALL, {"m": serial, "i": second}, operator)
    assert moved["data"]["installSim"]["meterSerial"] == serial
    gone = await gql(client, METER_SIM, {"s": serial}, viewer)
    assert gone["data"]["meterSim"]["iccid"] == second


def test_concurrent_installations_are_exclusive(settings: Settings) -> None:
    apps = [SimInventory(env=settings.database.eventsourcing_env()) for _ in range(6)]
    registry = MeterRegistry(env=settings.database.eventsourcing_env())
    try:
        cards = [new_iccid() for _ in range(6)]
        for iccid in cards:
            apps[0].add_sim(SimSpec(iccid=iccid, provider="Race"), ctx("olga"))
            apps[0].activate_sim(iccid, None, ctx("olga"))
        meter = register_meter(settings)

        def install(pair: tuple[int, str, str]) -> str:
            index, serial, iccid = pair
            try:
                apps[index].install_sim(registry, serial, iccid, ctx(f"o{index}"))
            except Conflict as exc:
                return f"conflict: {exc.message}"
            return "installed"

        # six cards into one meter at once: one goes in, five are told the meter is taken
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(install, [(i, meter, c) for i, c in enumerate(cards)]))
        assert results.count("installed") == 1, results
        assert all("already has SIM" in r for r in results if r != "installed")
        slot = apps[0].slot(meter)
        assert slot is not None and slot.iccid is not None
        holders = [c for c in cards if apps[0].get(c).meter_serial == meter]
        assert holders == [slot.iccid]

        # one card into six meters at once: one meter gets it
        card = next(c for c in cards if c != slot.iccid)
        meters = [register_meter(settings) for _ in range(6)]
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(install, [(i, m, card) for i, m in enumerate(meters)]))
        assert results.count("installed") == 1, results
        assert all("already installed in meter" in r for r in results if r != "installed")
        winner = apps[0].get(card).meter_serial
        assert winner in meters
        assert [m for m in meters if (s := apps[0].slot(m)) and s.iccid == card] == [winner]
    finally:
        registry.close()
        for app_ in apps:
            app_.close()


SIM_CSV_HEADER = (
    "simNumber,iccid,imsi,msisdn,provider,status,ipAddress,apn,dataLimit,activationDate\n"
)


async def test_csv_template_and_import_with_row_report_and_idempotent_reimport(
    client: Client, auth: Auth, sims_worker: SupervisedProjection
) -> None:
    template = await client.get("/api/v1/templates/sims")
    assert template.status_code == 200
    assert template.text.splitlines()[0] == SIM_CSV_HEADER.strip()
    provider = new_provider()
    a, b, c, d = (new_iccid() for _ in range(4))
    wrong = a[:-1] + str((int(a[-1]) + 1) % 10)
    csv = (
        SIM_CSV_HEADER
        + f"S-1,{a},234150123456789,447700900123,{provider},active,127.0.0.1,iot.example,50,"
        + "2025-01-31\n"
        + f"S-2,{b},,,{provider},,,,,\n"
        + f"S-3,{c},,,{provider},SUSPENDED,::1,,0,\n"
        + f"S-4,{wrong},,,{provider},ACTIVE,127.0.0.300,-x,-5,31/01/2025\n"
        + f"S-5,{d},,,{provider},lost,,,,\n"
        + f"S-6,{a},,,{provider},ACTIVE,,,,\n"
    )
    files = {"data": ("sims.csv", csv.encode(), "text/csv")}
    viewer = await client.post("/api/v1/imports/sims", files=files, headers=auth(Role.VIEWER))
    assert viewer.status_code == 403
    response = await client.post("/api/v1/imports/sims", files=files, headers=auth(Role.OPERATOR))
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["rows"], report["created"], report["unchanged"], report["rejected"]) == (
        6,
        3,
        0,
        3,
    )
    by_line = {(e["line"], e["field"]) for e in report["errors"]}
    assert by_line == {
        (5, "iccid"),
        (5, "ipAddress"),
        (5, "apn"),
        (5, "dataLimit"),
        (5, "activationDate"),
        (6, "status"),
        (7, "iccid"),
    }
    assert next(e for e in report["errors"] if e["line"] == 7)["reason"] == (
        f"SIM {a} already appears on line 2"
    )

    again = await client.post("/api/v1/imports/sims", files=files, headers=auth(Role.OPERATOR))
    assert (again.json()["created"], again.json()["unchanged"]) == (0, 3)
    changed = SIM_CSV_HEADER + f"S-1,{a},,,{provider},SUSPENDED,127.0.0.2,iot.example,50,\n"
    conflict = await client.post(
        "/api/v1/imports/sims",
        files={"data": ("sims.csv", changed.encode(), "text/csv")},
        headers=auth(Role.OPERATOR),
    )
    errors = conflict.json()["errors"]
    assert [(e["line"], e["field"], e["iccid"]) for e in errors] == [(2, "iccid", a)]
    assert "different imsi, msisdn, ipAddress, status" in errors[0]["reason"]

    viewer_headers = auth(Role.VIEWER)
    listed = await client.get(
        "/api/v1/sims", params={"provider": provider, "status": "ACTIVE"}, headers=viewer_headers
    )
    assert listed.status_code == 200, listed.text
    assert [(s["iccid"], s["activationDate"], s["dataLimit"]) for s in listed.json()["items"]] == [
        (a, "2025-01-31", 50)
    ]
    one = await client.get(f"/api/v1/sims/{c}", headers=viewer_headers)
    assert (one.json()["status"], one.json()["ipAddress"]) == ("SUSPENDED", "::1")
    missing = await client.get(f"/api/v1/sims/{new_iccid()}", headers=viewer_headers)
    assert missing.status_code == 404
    counts = (await client.get("/api/v1/sims/counts", headers=viewer_headers)).json()
    mine = {(x["status"], x["count"]) for x in counts if x["provider"] == provider}
    assert mine == {("ACTIVE", 1), ("IN_STOCK", 1), ("SUSPENDED", 1)}
    customer = await client.get("/api/v1/sims", headers=auth(Role.CUSTOMER, customer="A-1"))
    assert customer.status_code == 403


async def test_rest_commands_install_and_remove(
    client: Client, auth: Auth, settings: Settings, sims_worker: SupervisedProjection
) -> None:
    operator = auth(Role.OPERATOR)
    serial, iccid = register_meter(settings), new_iccid()
    added = await client.post(
        "/api/v1/commands/sims",
        json={"iccid": iccid, "provider": "Telia", "dataLimit": 5},
        headers={**operator, "Idempotency-Key": f"k-{iccid}"},
    )
    assert added.status_code == 201, added.text
    bad = await client.post(
        "/api/v1/commands/sims", json={"iccid": "12", "provider": "Telia"}, headers=operator
    )
    assert bad.status_code == 422
    assert [(f["field"], f["rule"]) for f in bad.json()["errors"]] == [("iccid", "format")]
    activated = await client.post(
        f"/api/v1/commands/sims/{iccid}/activate",
        json={"activationDate": "2025-02-01"},
        headers=operator,
    )
    assert activated.json()["activationDate"] == "2025-02-01"
    put = await client.post(
        f"/api/v1/commands/sims/{iccid}/install", json={"meterSerial": serial}, headers=operator
    )
    assert put.status_code == 200 and put.json()["meterSerial"] == serial, put.text
    shown = await client.get(f"/api/v1/meters/{serial}/sim", headers=auth(Role.VIEWER))
    assert shown.json()["iccid"] == iccid
    unknown_meter = await client.post(
        f"/api/v1/commands/sims/{iccid}/install",
        json={"meterSerial": "NO-SUCH-METER"},
        headers=operator,
    )
    assert unknown_meter.status_code == 404
    out = await client.post(
        "/api/v1/commands/sims/remove",
        json={"meterSerial": serial, "reason": "swap"},
        headers=operator,
    )
    assert out.status_code == 200 and out.json()["meterSerial"] is None
    none = await client.get(f"/api/v1/meters/{serial}/sim", headers=auth(Role.VIEWER))
    assert none.status_code == 404


async def test_sim_events_are_relayed_as_cloudevents(settings: Settings) -> None:
    iccid = new_iccid()
    inventory = SimInventory(env=settings.database.eventsourcing_env())
    try:
        inventory.add_sim(SimSpec(iccid=iccid, provider="Relay"), ctx("rita"))
    finally:
        inventory.close()
    nc = await nats.connect(settings.nats.url or "")
    try:
        relay = EventRelay(
            nc,
            settings.database.eventsourcing_env(),
            application_name="sims",
            source=settings.events_source,
            prefix=settings.nats.prefix,
        )
        await relay.relay_available()
        relay.close()
        sub = await nc.jetstream().subscribe(
            event_subject(settings.nats.prefix, "simcard", "AddedToStock"),
            stream=settings.nats.stream("HES_EVENTS"),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        wanted = str(sim_id(iccid))
        found: dict[str, Any] | None = None
        while found is None:
            event = decode_cloudevent((await sub.next_msg(timeout=5)).data)
            if event["subject"] == wanted:
                found = event
        await sub.unsubscribe()
    finally:
        await nc.close()
    assert found["type"] == "hes.simcard.AddedToStock.v1"
    assert found["data"]["spec"]["iccid"] == iccid
    assert (found["actor"], found["correlationid"]) == ("rita", "corr-rita")


METER_CSV_HEADER = (
    "meterNumber,concentratorId,meterType,brand,model,firmware,ipAddress,port,area,"
    "customer,simCard\n"
)


async def test_meter_import_installs_the_inventory_sim_its_sim_card_names(
    client: Client, auth: Auth, settings: Settings, sims_worker: SupervisedProjection
) -> None:
    operator = auth(Role.OPERATOR)
    known, in_stock, unknown = new_iccid(), new_iccid(), new_iccid()
    inventory = SimInventory(env=settings.database.eventsourcing_env())
    try:
        for iccid in (known, in_stock):
            inventory.add_sim(SimSpec(iccid=iccid, provider="Orange"), ctx("olga"))
        inventory.activate_sim(known, None, ctx("olga"))
    finally:
        inventory.close()
    m1, m2, m3 = new_serial("MI"), new_serial("MI"), new_serial("MI")
    csv = (
        METER_CSV_HEADER
        + f"{m1},DC-1,single-phase,Iskra,AM550,1.0,127.0.0.1,,Z-1,,{known}\n"
        + f"{m2},DC-1,single-phase,Iskra,AM550,1.0,127.0.0.2,,Z-1,,{unknown}\n"
        + f"{m3},DC-1,single-phase,Iskra,AM550,1.0,127.0.0.3,,Z-1,,{in_stock}\n"
    )
    files = {"data": ("meters.csv", csv.encode(), "text/csv")}
    for attempt in ("first", "again"):
        response = await client.post("/api/v1/imports/meters", files=files, headers=operator)
        assert response.status_code == 200, response.text
        report = response.json()
        created = 3 if attempt == "first" else 0
        assert (report["created"], report["rejected"], report["simsInstalled"]) == (created, 0, 1)
        assert [(e["line"], e["field"]) for e in report["simErrors"]] == [(4, "simCard")]
        assert "activate it first" in report["simErrors"][0]["reason"]
    viewer = auth(Role.VIEWER)
    linked = await gql(client, METER_SIM, {"s": m1}, viewer)
    assert linked["data"]["meterSim"]["iccid"] == known
    for serial in (m2, m3):
        assert (await gql(client, METER_SIM, {"s": serial}, viewer))["data"]["meterSim"] is None
    free = await gql(
        client, "query($s: String) { meter(serial: $s) { simCard } }", {"s": m2}, viewer
    )
    assert free["data"]["meter"]["simCard"] == unknown  # an unknown ICCID stays free text
