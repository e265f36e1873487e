"""REST command endpoints, problem responses, imports, template, health and OpenAPI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from commands.context import Role
from config.settings import Settings
from domain.meter import meter_id
from tests.conftest import new_serial
from tests.integration.customer_support import ensure_customers

pytestmark = pytest.mark.integration

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Any]
BASE = "/api/v1/commands/meters"


def body(serial: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "serial": serial,
        "manufacturer": "Landis+Gyr",
        "model": "E450",
        "firmware": "2.1",
        "phases": 1,
        "region": "South",
        "area": "S-07",
        "connection": {
            "host": "192.0.2.10",
            "port": 4059,
            "transport": "WRAPPER",
            "clientAddress": 16,
        },
    }
    data.update(overrides)
    return data


async def test_register_and_lifecycle_over_rest(
    client: Client, auth: Auth, settings: Settings
) -> None:
    ensure_customers(settings, "ACC-77", "ACC-78")
    serial = new_serial("R")
    created = await client.post(f"{BASE}/register", json=body(serial), headers=auth(Role.OPERATOR))
    assert created.status_code == 201, created.text
    meter = created.json()
    assert meter["serial"] == serial and meter["status"] == "REGISTERED"
    assert meter["connection"]["clientAddress"] == 16
    mid = meter["id"]

    commissioned = await client.post(
        f"{BASE}/{mid}/commission",
        json={"location": {"address": "7 Feeder Lane"}, "customerAccount": "ACC-77"},
        headers=auth(Role.OPERATOR),
    )
    assert commissioned.status_code == 200, commissioned.text
    assert commissioned.json()["customerAccount"] == "ACC-77"

    changed = await client.post(
        f"{BASE}/{mid}/connection-profile",
        json={"connection": {"host": "192.0.2.11", "port": 4060}},
        headers=auth(Role.OPERATOR),
    )
    assert changed.json()["connection"]["host"] == "192.0.2.11"

    reassigned = await client.post(
        f"{BASE}/{mid}/assign-customer",
        json={"customerAccount": "ACC-78"},
        headers=auth(Role.OPERATOR),
    )
    assert reassigned.json()["customerAccount"] == "ACC-78"
    unassigned = await client.post(
        f"{BASE}/{mid}/unassign-customer",
        json={"reason": "account closed"},
        headers=auth(Role.OPERATOR),
    )
    assert unassigned.json()["customerAccount"] is None
    done = await client.post(
        f"{BASE}/{mid}/decommission", json={"reason": "end of life"}, headers=auth(Role.ADMIN)
    )
    assert done.status_code == 200
    assert done.json()["status"] == "DECOMMISSIONED" and done.json()["version"] == 6


async def test_every_refusal_is_a_specific_problem(client: Client, auth: Auth) -> None:
    anonymous = await client.post(f"{BASE}/register", json=body(new_serial()))
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert anonymous.json()["code"] == "UNAUTHENTICATED"

    forbidden = await client.post(
        f"{BASE}/register", json=body(new_serial()), headers=auth(Role.VIEWER)
    )
    assert forbidden.status_code == 403 and forbidden.json()["code"] == "FORBIDDEN"

    invalid = await client.post(
        f"{BASE}/register", json=body("x y", phases=4), headers=auth(Role.OPERATOR)
    )
    assert invalid.status_code == 422
    assert invalid.headers["content-type"].startswith("application/problem+json")
    assert {e["field"] for e in invalid.json()["errors"]} == {"serial", "phases"}

    wrong_type = await client.post(
        f"{BASE}/register", json=body(new_serial(), phases="three"), headers=auth(Role.OPERATOR)
    )
    assert wrong_type.status_code == 400
    assert "phases" in wrong_type.text

    missing = await client.post(
        f"{BASE}/{meter_id('nobody-has-this')}/decommission",
        json={"reason": "x"},
        headers=auth(Role.ADMIN),
    )
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"

    serial = new_serial()
    await client.post(f"{BASE}/register", json=body(serial), headers=auth(Role.OPERATOR))
    duplicate = await client.post(
        f"{BASE}/register", json=body(serial), headers=auth(Role.OPERATOR)
    )
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "CONFLICT"

    bad_key = await client.post(
        f"{BASE}/register",
        json=body(new_serial()),
        headers={**auth(Role.OPERATOR), "Idempotency-Key": "no spaces"},
    )
    assert bad_key.status_code == 400 and bad_key.json()["code"] == "BAD_HEADER"

    not_json = await client.post(
        f"{BASE}/register",
        content=b"{not json",
        headers={**auth(Role.OPERATOR), "Content-Type": "application/json"},
    )
    assert not_json.status_code == 400


async def test_idempotency_key_over_rest(client: Client, auth: Auth) -> None:
    serial = new_serial()
    headers = {**auth(Role.OPERATOR), "Idempotency-Key": f"import-{serial}"}
    first = await client.post(f"{BASE}/register", json=body(serial), headers=headers)
    second = await client.post(f"{BASE}/register", json=body(serial), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    changed = await client.post(
        f"{BASE}/register", json=body(serial, model="Other"), headers=headers
    )
    assert changed.status_code == 409
    assert "different arguments" in changed.json()["detail"]


CSV_HEADER = (
    "meterNumber,concentratorId,meterType,brand,model,firmware,ipAddress,port,area,"
    "customer,simCard\n"
)


async def test_csv_import_reports_bad_rows_and_is_repeatable(
    client: Client, auth: Auth, settings: Settings
) -> None:
    ensure_customers(settings, "CUST-1")
    good1, good2 = new_serial("C"), new_serial("C")
    csv = (
        CSV_HEADER
        + f"{good1},DC-1,three-phase,Iskra,AM550,1.0,127.0.0.1,4059,Z-1,CUST-1,8931\n"
        + f"{good2},DC-1,single-phase,Iskra,AM550,1.0,127.0.0.2,,Z-1,,\n"
        + "bad serial,DC-1,three-phase,Iskra,AM550,1.0,300.0.0.1,99999,Z-1,,\n"
        + f"{good1},DC-1,three-phase,Iskra,AM550,1.0,127.0.0.1,4059,Z-1,,\n"
    )
    files = {"data": ("meters.csv", csv.encode(), "text/csv")}
    response = await client.post(
        "/api/v1/imports/meters",
        files=files,
        params={"region": "East"},
        headers=auth(Role.OPERATOR),
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["created"] == 2 and report["rejected"] == 2
    by_line = {(e["line"], e["field"]) for e in report["errors"]}
    assert {(4, "meterNumber"), (4, "ipAddress"), (4, "port"), (5, "meterNumber")} <= by_line

    again = await client.post(
        "/api/v1/imports/meters",
        files=files,
        params={"region": "East"},
        headers=auth(Role.OPERATOR),
    )
    assert again.json()["created"] == 0 and again.json()["unchanged"] == 2

    meter = await client.post(
        "/graphql",
        json={
            "query": "query($s: String) { meter(serial: $s) { region customerAccount phases } }",
            "variables": {"s": good1},
        },
        headers=auth(Role.VIEWER),
    )
    assert meter.json()["data"]["meter"] == {
        "region": "East",
        "customerAccount": "CUST-1",
        "phases": 3,
    }

    viewer = await client.post("/api/v1/imports/meters", files=files, headers=auth(Role.VIEWER))
    assert viewer.status_code == 403


async def test_template_health_and_openapi(client: Client) -> None:
    template = await client.get("/api/v1/templates/meters")
    assert template.status_code == 200
    assert template.text.splitlines()[0].startswith("meterNumber,concentratorId,meterType")

    assert (await client.get("/health/live")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code in (200, 503)
    checks = ready.json()["checks"]
    assert checks["postgres"]["ok"] and checks["nats"]["ok"]

    spec = (await client.get("/schema/openapi.json")).json()
    paths = set(spec["paths"])
    assert {
        f"{BASE}/register",
        f"{BASE}/{{meter_id}}/decommission",
        "/api/v1/imports/meters",
        "/api/v1/templates/meters",
    } <= paths
    assert "bearer" in spec["components"]["securitySchemes"]


async def test_correlation_id_is_kept_or_made_and_echoed(
    client: Client, auth: Auth, settings: Settings
) -> None:
    given = await client.get("/health/live", headers={"X-Correlation-ID": "req-42"})
    assert given.headers["x-correlation-id"] == "req-42"
    made = await client.get("/health/live", headers={"X-Correlation-ID": "bad id!"})
    assert made.headers["x-correlation-id"] != "bad id!"
    assert len(made.headers["x-correlation-id"]) == 36

    serial = new_serial()
    await client.post(
        f"{BASE}/register",
        json=body(serial),
        headers={**auth(Role.OPERATOR), "X-Correlation-ID": "corr-" + serial},
    )
    assert settings.database.url
    with psycopg.connect(settings.database.url) as conn:
        row = conn.execute(
            f"SELECT state FROM {settings.database.schema}.meters_events WHERE originator_id = %s",
            (meter_id(serial),),
        ).fetchone()
    assert row is not None and f'"correlation_id":"corr-{serial}"' in bytes(row[0]).decode()
