"""``hes keys``: create, list, rotate and revoke machine clients' API keys from a shell.

Whoever can run this against the database is an administrator already; the events record
``cli:<login name>`` as the actor. A new or rotated key is printed once, on stdout alone, so
``KEY=$(hes keys create gw-1 --scope ingest)`` captures it and nothing else.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from commands.context import Actor, CommandContext, Role, Scope
from config.settings import Settings, SettingsError
from hes.cli.terminal import out

if TYPE_CHECKING:
    from commands.api_keys import ApiKeyRegistry

keys_app = typer.Typer(help="API keys of machine clients (gateways, MDM).", no_args_is_help=True)
console = Console(stderr=True)


@contextmanager
def _registry() -> Iterator[ApiKeyRegistry]:
    from bootstrap.applications import api_key_registry
    from bootstrap.runtime import servers

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None
    with servers(settings, console, need_nats=False) as resolved:
        registry = api_key_registry(resolved.settings.database)
        try:
            yield registry
        finally:
            registry.close()


def _context() -> CommandContext:
    return CommandContext(
        actor=Actor(subject=f"cli:{getpass.getuser()}", roles=frozenset({Role.ADMIN}))
    )


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]keys:[/] {exc}")
    return typer.Exit(1)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Who uses the key, e.g. gateway-north-7.")],
    scope: Annotated[
        list[Scope], typer.Option("--scope", help="Machine scope(s): ingest, events:read, export.")
    ] = [],  # noqa: B006
    role: Annotated[
        list[Role], typer.Option("--role", help="Role(s), e.g. viewer (not customer).")
    ] = [],  # noqa: B006
) -> None:
    """Create a key and print it once (stdout); store it now, it cannot be shown again."""
    from domain.errors import DomainError

    with _registry() as registry:
        try:
            issued = registry.create(
                name, [r.value for r in role], [s.value for s in scope], _context()
            )
        except DomainError as exc:
            raise _fail(exc) from None
    console.print(f"created key {issued.key.prefix} ({issued.key.name}); shown once:")
    print(issued.secret)


@keys_app.command("list")
def list_keys(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Every key with its prefix, grants and status (never a secret)."""
    with _registry() as registry:
        keys = registry.all()
    if json_output:
        rows = [
            {
                "prefix": k.prefix,
                "name": k.name,
                "roles": list(k.roles),
                "scopes": list(k.scopes),
                "generation": k.generation,
                "active": k.active,
                "createdAt": k.created_on.isoformat(),
                "createdBy": k.created_by,
                "revokedAt": k.revoked_at.isoformat() if k.revoked_at else None,
            }
            for k in keys
        ]
        print(msgspec.json.encode(rows).decode())
        return
    table = Table("prefix", "name", "grants", "gen", "status", "created")
    for k in keys:
        status = "active" if k.active else f"revoked {k.revoked_at:%Y-%m-%d}"
        grants = ", ".join([*k.roles, *k.scopes])
        table.add_row(
            k.prefix, k.name, grants, str(k.generation), status, f"{k.created_on:%Y-%m-%d}"
        )
    out().print(table)


@keys_app.command("rotate")
def rotate(prefix: Annotated[str, typer.Argument(help="The key's prefix.")]) -> None:
    """Give the key a new secret and print it once; the old secret stops working now."""
    from domain.errors import DomainError

    with _registry() as registry:
        try:
            issued = registry.rotate(prefix, _context())
        except DomainError as exc:
            raise _fail(exc) from None
    console.print(f"rotated key {prefix} (generation {issued.key.generation}); shown once:")
    print(issued.secret)


@keys_app.command("revoke")
def revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix.")],
    reason: Annotated[str, typer.Option(help="Why the key is revoked (recorded).")],
) -> None:
    """Revoke the key for good."""
    from domain.errors import DomainError

    with _registry() as registry:
        try:
            registry.revoke(prefix, reason, _context())
        except DomainError as exc:
            raise _fail(exc) from None
    console.print(f"revoked key {prefix}")
