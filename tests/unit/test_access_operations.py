"""The access table is keyed by command and query names; the transports map their doors to them."""

from __future__ import annotations

import pytest

from api.graphql.operations import FIELD_OPERATIONS, ROOT_OPERATIONS
from api.rest.operations import OPEN_ROUTES, ROUTE_OPERATIONS
from commands.access import ACCESS, INTERNAL, QUERIES, access_table
from commands.policy import COMMAND_ROLES

MAPPINGS = {
    "api.graphql.operations.ROOT_OPERATIONS": ROOT_OPERATIONS,
    "api.graphql.operations.FIELD_OPERATIONS": FIELD_OPERATIONS,
    "api.rest.operations.ROUTE_OPERATIONS": ROUTE_OPERATIONS,
}


@pytest.mark.parametrize("mapping", sorted(MAPPINGS))
def test_every_mapped_name_is_a_command_or_query_of_the_table(mapping: str) -> None:
    unknown = sorted({name for name in MAPPINGS[mapping].values() if name not in ACCESS})
    assert unknown == [], f"{mapping} maps doors to operations commands.access does not know"


def test_every_command_and_query_is_reachable_from_a_transport_or_marked_internal() -> None:
    reachable = {name for mapping in MAPPINGS.values() for name in mapping.values()}
    assert sorted(set(ACCESS) - reachable - INTERNAL) == [], "map them or mark them INTERNAL"
    assert sorted(INTERNAL & reachable) == [], "mapped names must not be marked INTERNAL"
    assert sorted(INTERNAL - set(ACCESS)) == [], "INTERNAL names no command or query"


def test_commands_take_their_roles_from_the_command_policy() -> None:
    assert sorted(set(QUERIES) & set(COMMAND_ROLES)) == [], "a name is a command or a query"
    for name, allowed in COMMAND_ROLES.items():
        assert ACCESS[name].roles == allowed and not ACCESS[name].scopes, name
        assert not ACCESS[name].public, name


def test_the_table_names_no_transport() -> None:
    for name in ACCESS:
        assert name.isidentifier() and "." not in name and " " not in name, name
        assert name[0].islower(), name


def test_open_routes_are_not_mapped_to_operations_too() -> None:
    assert sorted(OPEN_ROUTES & set(ROUTE_OPERATIONS)) == []


def test_a_door_mapped_to_an_unknown_operation_is_refused_at_import() -> None:
    with pytest.raises(KeyError, match="noSuchOperation"):
        access_table({"Query.nothing": "noSuchOperation"})
    assert access_table({"Query.meters": "listMeters"}) == {"Query.meters": ACCESS["listMeters"]}
