"""Customers over GraphQL and REST: roles, redaction, links, CSV template and import."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.auth import TokenService
from bootstrap.container import Container
from bootstrap.workers import SupervisedProjection, customers_projection
from commands.context import Role
from commands.customer_csv import TEMPLATE_COLUMNS
from config.settings import Settings
from tests.conftest import new_serial
from tests.integration.customer_support import new_account
from tests.integration.gql import gql

pytestmark = pytest.mark.integration

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Any]

CUSTOMER_FIELDS = "accountNumber name address phone email area customerType status meters erased"
CREATE = (
    "mutation($a: String!, $c: ContactInput!, $area: String!) {"
    " createCustomer(accountNumber: $a, contact: $c, area: $area) { __typename"
    f" ... on Customer {{ {CUSTOMER_FIELDS} }}"
    " ... on ValidationError { code fields { field rule } }"
    " ... on ForbiddenError { code } ... on ConflictError { code message } } }"
)


@pytest.fixture(scope="module")
def customers_worker(settings: Settings) -> Iterator[SupervisedProjection]:
    """The customers projection worker for this module."""
    worker = customers_projection(settings)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
async def api(
    settings: Settings,
    projection: SupervisedProjection,
    customers_worker: SupervisedProjection,
    tokens: TokenService,
) -> AsyncIterator[Client]:
    """The app with customer links checked, as in production."""
    checked = settings.replace(customer_links_checked=True)
    app = create_app(Container(checked), tokens)
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


def contact(account: str) -> dict[str, str]:
    """Contact data unique to ``account``."""
    return {
        "name": f"Name {account}",
        "address": f"Street {account}",
        "phone": "+1 555 0100",
        "email": f"{account.lower()}@example.org",
    }


async def create(api: Client, auth: Auth, account: str, area: str = "West") -> dict[str, Any]:
    """Create a customer as an operator through GraphQL."""
    answer = await gql(
        api, CREATE, {"a": account, "c": contact(account), "area": area}, auth(Role.OPERATOR)
    )
    result: dict[str, Any] = answer["data"]["createCustomer"]
    return result


async def test_graphql_create_query_and_redaction_by_role(api: Client, auth: Auth) -> None:
    account = new_account("GQL")
    made = await create(api, auth, account)
    assert made["__typename"] == "Customer" and made["phone"] == "+1 555 0100"
    again = await create(api, auth, account)
    assert again["__typename"] == "ConflictError"
    query = f"query($a: String!) {{ customer(accountNumber: $a) {{ {CUSTOMER_FIELDS} }} }}"
    seen = {}
    for who, headers in (
        ("viewer", auth(Role.VIEWER)),
        ("operator", auth(Role.OPERATOR)),
        ("own", auth(Role.CUSTOMER, customer=account)),
        ("other", auth(Role.CUSTOMER, customer="SOMEONE-ELSE")),
    ):
        seen[who] = (await gql(api, query, {"a": account}, headers))["data"]["customer"]
    assert seen["viewer"]["name"] == f"Name {account}"
    assert seen["viewer"]["phone"] is None and seen["viewer"]["email"] is None
    assert seen["operator"]["email"] == f"{account.lower()}@example.org"
    assert seen["own"]["phone"] == "+1 555 0100"
    assert seen["other"] is None
    bad = await gql(
        api,
        CREATE,
        {"a": new_account(), "c": {**contact("x"), "email": "no-at"}, "area": "West"},
        auth(Role.OPERATOR),
    )
    fields = bad["data"]["createCustomer"]["fields"]
    assert fields == [{"field": "email", "rule": "format"}]
    refused = await gql(
        api, CREATE, {"a": new_account(), "c": contact("y"), "area": "West"}, auth(Role.VIEWER)
    )
    assert refused["data"]["createCustomer"] == {
        "__typename": "ForbiddenError",
        "code": "FORBIDDEN",
    }


async def test_customers_list_is_narrowed_for_customers(api: Client, auth: Auth) -> None:
    area = f"Zone-{new_account('Z')}"
    accounts = sorted([new_account("L"), new_account("L")])
    for account in accounts:
        await create(api, auth, account, area)
    query = (
        "query($area: String) { customers(filter: {area: $area}) {"
        " edges { node { accountNumber phone } } pageInfo { hasNextPage } } }"
    )
    staff = await gql(api, query, {"area": area}, auth(Role.VIEWER))
    nodes = [e["node"] for e in staff["data"]["customers"]["edges"]]
    assert nodes == [{"accountNumber": a, "phone": None} for a in accounts]
    own = await gql(api, query, {"area": area}, auth(Role.CUSTOMER, customer=accounts[1]))
    assert [e["node"]["accountNumber"] for e in own["data"]["customers"]["edges"]] == accounts[1:]
    counts = await api.get("/api/v1/customer-counts", headers=auth(Role.VIEWER))
    assert {"area": area, "customers": 2, "active": 2} in counts.json()
    refused = await api.get("/api/v1/customer-counts", headers=auth(Role.CUSTOMER, customer="x"))
    assert refused.status_code == 403


async def test_rest_commands_links_and_erasure(api: Client, auth: Auth) -> None:
    account = new_account("REST")
    body = {"accountNumber": account, "area": "East", **contact(account)}
    made = await api.post("/api/v1/commands/customers", json=body, headers=auth(Role.OPERATOR))
    assert made.status_code == 201, made.text
    assert made.json()["accountNumber"] == account
    serial = new_serial("CAP")
    register = {
        "serial": serial,
        "manufacturer": "Acme",
        "model": "M1",
        "firmware": "1",
        "phases": 1,
        "region": "East",
        "area": "East",
        "connection": {"host": "127.0.0.1"},
    }
    meter = await api.post(
        "/api/v1/commands/meters/register", json=register, headers=auth(Role.OPERATOR)
    )
    assert meter.status_code == 201, meter.text
    meter_id = meter.json()["id"]
    unknown = await api.post(
        f"/api/v1/commands/meters/{meter_id}/assign-customer",
        json={"customerAccount": "NO-SUCH-ACCOUNT"},
        headers=auth(Role.OPERATOR),
    )
    assert unknown.status_code == 404, unknown.text
    assigned = await api.post(
        f"/api/v1/commands/meters/{meter_id}/assign-customer",
        json={"customerAccount": account},
        headers=auth(Role.OPERATOR),
    )
    assert assigned.status_code == 200, assigned.text
    owner = await api.get(f"/api/v1/meters/{serial}/customer", headers=auth(Role.VIEWER))
    assert owner.status_code == 200 and owner.json()["meters"] == [serial]
    assert owner.json()["email"] is None
    refused = await api.post(
        f"/api/v1/commands/customers/{account}/close",
        json={"reason": "moved"},
        headers=auth(Role.OPERATOR),
    )
    assert refused.status_code == 409 and "1 meters assigned" in refused.text
    closed = await api.post(
        f"/api/v1/commands/customers/{account}/close",
        json={"reason": "moved", "unassignMeters": True},
        headers=auth(Role.OPERATOR),
    )
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    operator_erase = await api.post(
        f"/api/v1/commands/customers/{account}/erase",
        json={"reason": "GDPR"},
        headers=auth(Role.OPERATOR),
    )
    assert operator_erase.status_code == 403
    erased = await api.post(
        f"/api/v1/commands/customers/{account}/erase",
        json={"reason": "GDPR"},
        headers=auth(Role.ADMIN),
    )
    assert erased.status_code == 200, erased.text
    shown = (await api.get(f"/api/v1/customers/{account}", headers=auth(Role.ADMIN))).json()
    assert shown["erased"] and shown["name"] == "[erased]" and shown["email"] == "[erased]"
    schema = (await api.get("/schema/openapi.json")).json()
    assert "/api/v1/imports/customers" in schema["paths"]
    assert "/api/v1/customers/{account}" in schema["paths"]


async def test_csv_template_import_row_report_and_idempotent_reimport(
    api: Client, auth: Auth
) -> None:
    template = await api.get("/api/v1/templates/customers")
    assert template.status_code == 200
    assert template.text.splitlines()[0] == ",".join(TEMPLATE_COLUMNS)
    assert TEMPLATE_COLUMNS == (
        "customerName",
        "accountNumber",
        "address",
        "phoneNumber",
        "email",
        "area",
        "meterAssigned",
        "customerType",
        "tariffPlan",
        "connectionDate",
    )
    serial = new_serial("CIM")
    register = {
        "serial": serial,
        "manufacturer": "Acme",
        "model": "M1",
        "firmware": "1",
        "phases": 1,
        "region": "North",
        "area": "North",
        "connection": {"host": "127.0.0.1"},
    }
    made = await api.post(
        "/api/v1/commands/meters/register", json=register, headers=auth(Role.OPERATOR)
    )
    assert made.status_code == 201
    good, other = new_account("CSV"), new_account("CSV")
    rows = [
        ",".join(TEMPLATE_COLUMNS),
        f"Ann One,{good},1 Road,+1 555 0101,ann@example.org,North,{serial},commercial,TOU,"
        "2024-02-03",
        f"Bob Two,{other},2 Road,,,North,,,,",
        "Bad Row,bad account!,3 Road,12,nope,North,,martian,,2024-13-01",
        f"Dup,{good},4 Road,,,North,,,,",
        f"Meterless,{new_account('CSV')},5 Road,,,North,NO-SUCH-METER,,,",
    ]
    csv_body = ("\r\n".join(rows) + "\r\n").encode()
    files = {"data": ("customers.csv", csv_body, "text/csv")}
    first = await api.post("/api/v1/imports/customers", files=files, headers=auth(Role.OPERATOR))
    assert first.status_code == 200, first.text
    report = first.json()
    assert (report["rows"], report["created"], report["unchanged"]) == (5, 3, 0)
    assert report["metersAssigned"] == 1
    problems = {(e["line"], e["field"]) for e in report["errors"]}
    assert problems == {
        (4, "accountNumber"),
        (4, "phoneNumber"),
        (4, "email"),
        (4, "customerType"),
        (4, "connectionDate"),
        (5, "accountNumber"),
        (6, "meterAssigned"),
    }
    again = (
        await api.post("/api/v1/imports/customers", files=files, headers=auth(Role.OPERATOR))
    ).json()
    assert (again["created"], again["unchanged"], again["metersAssigned"]) == (0, 3, 1)
    owner = await api.get(f"/api/v1/meters/{serial}/customer", headers=auth(Role.OPERATOR))
    assert owner.json()["accountNumber"] == good and owner.json()["customerType"] == "commercial"
    changed = [rows[0], rows[1].replace("Ann One", "Ann Changed")]
    files = {"data": ("customers.csv", ("\r\n".join(changed)).encode(), "text/csv")}
    third = (
        await api.post("/api/v1/imports/customers", files=files, headers=auth(Role.OPERATOR))
    ).json()
    assert third["created"] == 0 and third["errors"][0]["field"] == "accountNumber"
    assert "different name" in third["errors"][0]["reason"]
    viewer = await api.post("/api/v1/imports/customers", files=files, headers=auth(Role.VIEWER))
    assert viewer.status_code == 403
