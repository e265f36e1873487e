"""Query and subscription arguments refused at the door when they hold control characters.

Queries take identifiers, filters and cursors, none of which can hold a control character or an
unpaired surrogate, and such text would otherwise reach a SQL parameter (PostgreSQL refuses NUL)
or an encoder. ``guard_arguments(Query, Subscription)`` puts ``CleanArguments`` on every root
field, so a new query or subscription is covered without a line of its own. Mutations are left
to the domain's value objects, which answer a typed ``ValidationError`` naming the field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import FieldExtension
from strawberry.types import Info

from domain.text import ONE_LINE_RULE, refused_character
from domain.values import camel


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string inside an argument value, with its path (``filter.region``, ``ids[2]``)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif hasattr(value, "__strawberry_definition__"):
        for field in value.__strawberry_definition__.fields:
            name = field.python_name
            yield from _strings(getattr(value, name, None), f"{path}.{_name(name)}")


def _name(python_name: str) -> str:
    """The GraphQL name of an argument or input field (``from_`` → ``from``)."""
    return camel(python_name.rstrip("_"))


def refused_argument(kwargs: dict[str, Any], info: Info[Any, Any]) -> GraphQLError | None:
    """A ``BAD_USER_INPUT`` error naming the first argument that holds a refused character."""
    for key, value in kwargs.items():
        for path, text in _strings(value, _name(key)):
            where = refused_character(text)
            if where is not None:
                return GraphQLError(
                    f"{info.field_name}: argument {path} holds {where}; arguments must be "
                    f"{ONE_LINE_RULE}",
                    extensions={"code": "BAD_USER_INPUT", "field": path, "rule": "characters"},
                )
    return None


class CleanArguments(FieldExtension):
    """Refuses a root field's call when a string argument holds a control character.

    Runs inside ``AccessControl`` (a refused caller learns nothing about its arguments) and
    hands the resolver's result through untouched: ``AccessControl`` must still see a
    subscription's stream to keep checking the credentials while it runs.
    """

    def resolve(
        self, next_: Callable[..., Any], source: Any, info: Info[Any, Any], **kwargs: Any
    ) -> Any:
        """Check, then resolve (sync fields)."""
        error = refused_argument(kwargs, info)
        if error is not None:
            raise error
        return next_(source, info, **kwargs)

    def resolve_async(  # type: ignore[override]
        self, next_: Callable[..., Any], source: Any, info: Info[Any, Any], **kwargs: Any
    ) -> Any:
        """Check, then hand over the resolver's awaitable or stream (async fields)."""
        return self.resolve(next_, source, info, **kwargs)


def guard_arguments(*root_types: type) -> None:
    """Put ``CleanArguments`` on every field of the given root types (once)."""
    for root in root_types:
        for field in root.__strawberry_definition__.fields:  # type: ignore[attr-defined]
            if not any(isinstance(e, CleanArguments) for e in field.extensions):
                field.extensions.append(CleanArguments())
