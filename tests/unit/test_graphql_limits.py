"""GraphQL limits: depth, aliases, tokens and cost refuse an operation before it runs."""

from __future__ import annotations

from typing import Any

from graphql import FragmentDefinitionNode, OperationDefinitionNode, parse

from api.graphql.limits import MAX_COST, query_cost
from api.graphql.schema import schema

METERS = "query($n: Int) { meters(first: $n) { edges { node { serial connection { host } } } } }"


def _cost(query: str, variables: dict[str, Any] | None = None) -> int:
    document = parse(query)
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    return query_cost(schema._schema, operations, fragments, variables or {})


def test_cost_is_page_size_times_child_cost() -> None:
    # meters: 1 + n * (edges: 1 + node: 1 + serial 1 + connection: 1 + host 1) = 1 + 5n
    assert _cost(METERS, {"n": 10}) == 51
    assert _cost(METERS, {"n": 500}) == 2501
    assert _cost(METERS) == 1 + 50 * 5  # the argument's default page size
    literal = "{ meters(first: 7) { edges { node { serial } } } }"
    assert _cost(literal) == 1 + 7 * 3
    fragment = (
        "query { meters(first: 2) { ...E } } fragment E on MeterConnection { edges { cursor } }"
    )
    assert _cost(fragment) == 1 + 2 * 2
    assert _cost("{ __schema { types { name fields { name } } } }") == 0


async def test_over_limit_operations_are_refused_before_running() -> None:
    pages = " ".join(
        f'a{i}: readings(meter: "m", quantity: "voltage", from: "2024-01-01T00:00:00Z",'
        ' to: "2024-01-02T00:00:00Z", first: 5000) { edges { node { value ts } } }'
        for i in range(6)
    )
    costly = await schema.execute("{ " + pages + " }")
    assert costly.errors and costly.errors[0].extensions
    assert costly.errors[0].extensions["code"] == "QUERY_TOO_COSTLY"
    assert costly.errors[0].extensions["cost"] > MAX_COST

    aliases = " ".join(f"f{i}: __typename" for i in range(16))
    too_many = await schema.execute("{ " + aliases + " }")
    assert too_many.errors and "aliases" in too_many.errors[0].message

    deep = "{ meters " + "{ edges " * 11 + "{ cursor }" + " }" * 11 + " }"
    too_deep = await schema.execute(deep)
    assert too_deep.errors
    assert "exceeds maximum operation depth of 10" in too_deep.errors[0].message

    tokens = "{ " + " ".join("__typename" for _ in range(2100)) + " }"
    too_long = await schema.execute(tokens)
    assert too_long.errors and "token" in too_long.errors[0].message.lower()
