"""Small GraphQL helpers for API tests."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

METER_FIELDS = """
  ... on Meter { id serial status region area customerAccount version
                 connection { host port transport clientAddress serverAddress security }
                 location { address latitude longitude } }
  ... on ValidationError { code message fields { field rule message } }
  ... on NotFoundError { code message }
  ... on ConflictError { code message }
  ... on ForbiddenError { code message }
"""

REGISTER = (
    "mutation($input: RegisterMeterInput!, $key: String) {"
    " registerMeter(input: $input, idempotencyKey: $key) { __typename " + METER_FIELDS + " } }"
)


async def gql(
    client: AsyncTestClient,  # type: ignore[type-arg]
    query: str,
    variables: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """POST a GraphQL operation and return the decoded JSON body."""
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers or {}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def meter_input(serial: str, **overrides: Any) -> dict[str, Any]:
    """A valid RegisterMeterInput."""
    data: dict[str, Any] = {
        "serial": serial,
        "manufacturer": "Acme Metering",
        "model": "AM550",
        "firmware": "1.2.3",
        "phases": 3,
        "region": "North",
        "area": "N-01",
        "connection": {"host": "127.1.2.3", "port": 4059, "transport": "WRAPPER"},
    }
    data.update(overrides)
    return data
