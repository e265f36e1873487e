"""GraphQL operation limits: depth, aliases, tokens and a simple cost (page size times child cost).

Cost of a selection = the sum over its fields of ``1 + first * cost(child selection)``, where
``first`` is the field's page-size argument (1 for fields without one); introspection fields
cost nothing. With the page caps of the fields (meters up to 500, readings and history up to 5000)
one full page of anything fits; many aliased full pages in one request do not.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
)
from strawberry.extensions import (
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

MAX_DEPTH = 10
MAX_ALIASES = 15
MAX_TOKENS = 2000
MAX_COST = 100_000


def query_cost(
    schema: GraphQLSchema,
    operations: list[OperationDefinitionNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any],
) -> int:
    """The highest cost of ``operations``; unknown fields cost nothing (validation names them)."""

    def page(node: FieldNode, args: Mapping[str, Any]) -> int:
        if "first" not in args:
            return 1
        for arg in node.arguments or ():
            if arg.name.value != "first":
                continue
            if isinstance(arg.value, IntValueNode):
                return max(1, int(arg.value.value))
            if isinstance(arg.value, VariableNode):
                given = variables.get(arg.value.name.value)
                if isinstance(given, int):
                    return max(1, given)
        default = args["first"].default_value
        return max(1, default) if isinstance(default, int) else 1

    def cost(
        selection_set: SelectionSetNode, parent: GraphQLNamedType, seen: frozenset[str]
    ) -> int:
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.name.value.startswith("__"):
                    continue
                if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
                    continue
                field = parent.fields.get(selection.name.value)
                if field is None:
                    continue
                child = 0
                if selection.selection_set is not None:
                    child = cost(selection.selection_set, get_named_type(field.type), seen)
                total += 1 + page(selection, field.args) * child
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = schema.get_type(condition.name.value) if condition else parent
                if target is not None:
                    total += cost(selection.selection_set, target, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if fragment is None or name in seen:  # cycles are a validation error anyway
                    continue
                target = schema.get_type(fragment.type_condition.name.value)
                if target is not None:
                    total += cost(fragment.selection_set, target, seen | {name})
        return total

    highest = 0
    for operation in operations:
        root = schema.get_root_type(operation.operation)
        if root is not None:
            highest = max(highest, cost(operation.selection_set, root, frozenset()))
    return highest


class CostLimiter(SchemaExtension):
    """Refuses an operation whose cost exceeds ``MAX_COST`` before it is validated or run."""

    def on_validate(self) -> Iterator[None]:
        """Compute the cost of the parsed document; set a pre-execution error when too high."""
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.pre_execution_errors is None:
            operations = [
                d
                for d in document.definitions
                if isinstance(d, OperationDefinitionNode)
                and (
                    context.operation_name is None
                    or (d.name and d.name.value == context.operation_name)
                )
            ]
            fragments = {
                d.name.value: d
                for d in document.definitions
                if isinstance(d, FragmentDefinitionNode)
            }
            total = query_cost(
                context.schema._schema, operations, fragments, context.variables or {}
            )
            if total > MAX_COST:
                context.pre_execution_errors = [
                    GraphQLError(
                        f"query cost {total} exceeds {MAX_COST}: ask for smaller pages (first)"
                        " or fewer fields and aliases",
                        extensions={"code": "QUERY_TOO_COSTLY", "cost": total},
                    )
                ]
        yield


def limits() -> list[Any]:
    """Factories of the schema extensions that bound the size and cost of an operation."""
    return [
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        CostLimiter,
    ]
