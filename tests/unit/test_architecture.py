"""The import rules of docs/architecture.md, checked by parsing every module's imports (ast)."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ADAPTERS = {"adapters", "adapters.dlms", "adapters.nats", "adapters.notify"}
BELOW_BOOTSTRAP = {"domain", "commands", "config", "projections", "processes", "api", *ADAPTERS}
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    "commands": {"domain"},
    "config": {"domain"},
    **{adapter: {"domain", "commands", "config", *ADAPTERS} for adapter in ADAPTERS},
    "projections": {"domain", "commands", "config", *ADAPTERS},
    "processes": {"domain", "commands", "config", "projections", *ADAPTERS},
    "api": {"domain", "commands", "config", "projections", "processes", *ADAPTERS},
    "bootstrap": BELOW_BOOTSTRAP,
    "simulation": BELOW_BOOTSTRAP | {"bootstrap"},
    "benchmarks": BELOW_BOOTSTRAP | {"bootstrap", "simulation"},
    "hes": BELOW_BOOTSTRAP | {"bootstrap", "simulation", "benchmarks", "hes"},
}
"""Layer → the layers of ours it may import (its own always). Folder table: docs/architecture.md."""

PACKAGES: tuple[str, ...] = (
    *("domain", "commands", "config", "adapters", "projections", "processes", "api"),
    *("bootstrap", "simulation", "benchmarks", "hes"),
)


def layer(module: str) -> str | None:
    """The layer a dotted module name belongs to (adapters split by kind), None if not ours."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[0] == "adapters" and len(parts) > 2 and parts[1] in {"dlms", "nats", "notify"}:
        return f"adapters.{parts[1]}"
    return parts[0]


def imported(path: Path) -> set[str]:
    """Every absolute module a file imports, also inside functions and TYPE_CHECKING blocks."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                raise AssertionError(f"{path}: relative import (write the absolute module path)")
            names.add(node.module)
            # `from pkg import module` imports the module too
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_of(path: Path) -> str:
    """The dotted module name of a file under the repository root."""
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def import_graph(packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    """Module → the modules of ours it imports."""
    graph: dict[str, set[str]] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            graph[module_of(path)] = {name for name in imported(path) if layer(name)}
    return graph


def violations(graph: Mapping[str, set[str]]) -> list[str]:
    """Imports that cross a layer boundary the ``ALLOWED`` table does not open."""
    found = []
    for module, targets in graph.items():
        source = layer(module)
        assert source is not None
        for target in sorted(targets):
            to = layer(target)
            if to is not None and to != source and to not in ALLOWED[source]:
                found.append(f"{module} imports {target} ({source} may not import {to})")
    return found


def layer_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Cycles among the layers (each once, as a path from its smallest layer back to it)."""
    edges: dict[str, set[str]] = {}
    for module, targets in graph.items():
        source = layer(module)
        assert source is not None
        for target in targets:
            to = layer(target)
            if to is not None and to != source:
                edges.setdefault(source, set()).add(to)
    cycles: list[list[str]] = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                cycles.append([*path, start])
            elif nxt > start and nxt not in path:
                walk(start, nxt, [*path, nxt])

    for start in sorted(edges):
        walk(start, start, [start])
    return cycles


GRAPH = import_graph()


def test_every_package_has_its_rule() -> None:
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), package
    assert {layer(module) for module in GRAPH} <= set(ALLOWED)


def test_layers_import_only_what_the_table_allows() -> None:
    found = violations(GRAPH)
    assert not found, "\n".join(found)


def test_domain_imports_nothing_of_ours_and_no_io() -> None:
    for path in (ROOT / "domain").rglob("*.py"):
        names = imported(path)
        ours = {name for name in names if layer(name) not in (None, "domain")}
        io = {
            name
            for name in names
            if name.split(".")[0] in {"psycopg", "psycopg_pool", "nats", "redis", "litestar"}
        }
        assert not ours and not io, f"{path.relative_to(ROOT)}: {sorted(ours | io)}"


def test_nothing_below_the_composition_root_imports_it_or_the_entry_points() -> None:
    upper = {"bootstrap", "simulation", "benchmarks", "hes"}
    found = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if layer(module) in BELOW_BOOTSTRAP
        for target in targets
        if layer(target) in upper
    ]
    assert not found, "\n".join(found)


def test_no_cycles_between_layers() -> None:
    cycles = layer_cycles(GRAPH)
    shown = " ; ".join(" -> ".join(cycle) for cycle in cycles[:5])
    assert not cycles, f"{len(cycles)} cycles, e.g. {shown}"


def test_gurux_is_imported_only_in_adapters_dlms() -> None:
    found = []
    for package in (*PACKAGES, "tests"):
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if rel.parts[:2] == ("adapters", "dlms") or rel.parts[0] == "tests":
                continue
            if any(name.split(".")[0].startswith("gurux") for name in imported(path)):
                found.append(str(rel))
    assert not found, found


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"domain.meter": {"commands.meters"}}, ["domain.meter"]),
        ({"api.app": {"bootstrap.container"}}, ["api.app"]),
        ({"adapters.nats.relay": {"adapters.dlms.session"}}, []),
        ({"projections.x": {"processes.detectors"}}, ["projections.x"]),
        ({"hes.cli.root": {"bootstrap.runtime", "benchmarks.ingest"}}, []),
    ],
)
def test_the_rules_catch_a_forbidden_import(
    graph: dict[str, set[str]], expected: list[str]
) -> None:
    assert [line.split()[0] for line in violations(graph)] == expected


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"projections.a": {"processes.b"}, "processes.b": {"projections.c"}}
    assert layer_cycles(graph) == [["processes", "projections", "processes"]]


def test_our_top_level_names_belong_to_no_other_installed_distribution() -> None:
    """The packages install as top-level names (docs/architecture.md#packaging): none is shared."""
    owners = packages_distributions()
    shared = {name: owners[name] for name in PACKAGES if set(owners.get(name, [])) - {"hes"}}
    assert not shared, shared
