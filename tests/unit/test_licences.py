"""Every installed runtime dependency carries a licence from the allow-list in pyproject.toml."""

from __future__ import annotations

import tomllib
from importlib.metadata import distribution
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from hes.cli.licences import Policy, licence_of, report, runtime_distributions

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_runtime_dependency_has_an_allowed_licence() -> None:
    rows = report(Policy.load())
    listing = "\n".join(f"{r.name} {r.version}: {r.expression} ({r.source})" for r in rows)
    print(listing)  # the list, for whoever reads the test log
    names = {r.name for r in rows}
    assert {"gurux-dlms", "psycopg", "litestar", "eventsourcing", "nats-py"} <= names
    refused = [r for r in rows if not r.allowed]
    assert not refused, f"licences outside [tool.hes.licences] allowed: {refused}"
    unknown = [r for r in rows if r.expression is None and r.exception is None]
    assert not unknown, f"no readable licence in the metadata of {unknown}"


def test_the_project_is_gpl_2_or_later_with_its_licence_text() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "GPL-2.0-or-later"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 2, June 1991" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the whole licence, not a notice
    assert licence_of(distribution("hes"))[0] == "GPL-2.0-or-later"  # the installed metadata


def test_dlms_cosem_under_bsl_is_a_test_tool_only() -> None:
    runtime = {canonicalize_name(d.metadata["Name"]) for d in runtime_distributions()}
    assert "dlms-cosem" not in runtime
    extras = PYPROJECT["project"]["optional-dependencies"]
    dev = {canonicalize_name(Requirement(r).name) for r in extras["dev"]}
    assert "dlms-cosem" in dev
    assert "dlms-cosem" in (ROOT / "docs" / "licensing.md").read_text()


@pytest.mark.parametrize(
    ("expression", "allowed"),
    [
        ("MIT", True),
        ("Apache-2.0 OR BSD-3-Clause", True),
        ("Apache-2.0 AND BSD-2-Clause", True),
        ("AGPL-3.0-or-later", False),
        ("BUSL-1.1", False),
        ("SSPL-1.0 OR MIT", True),
        ("MIT AND (SSPL-1.0 OR GPL-3.0-only)", False),
        ("(MIT OR SSPL-1.0) AND Apache-2.0", True),
        (None, False),
    ],
)
def test_expressions_are_judged_by_spdx_logic(expression: str | None, allowed: bool) -> None:
    assert Policy.load().permits(expression) is allowed


def test_compose_images_are_pinned_and_redis_is_bsd_licensed_valkey() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    images = {name: svc["image"] for name, svc in compose["services"].items() if "image" in svc}
    for name, image in images.items():
        if image == "hes:local":
            continue
        repository, _, tag = image.partition(":")
        assert tag and tag != "latest" and tag[0].isdigit(), f"{name}: pin a version ({image})"
        assert not repository.endswith("redis"), f"{name}: Redis ≥ 7.4 is not BSD-licensed"
    assert images["redis"].startswith("valkey/valkey:")
