"""Licences of the installed runtime dependencies, judged against the allow-list in pyproject.toml.

A distribution's licence is read from its metadata, best source first: ``License-Expression``
(PEP 639, SPDX), then the ``License ::`` trove classifiers, then the free-text ``License`` field
when it is a known name. ``hes licences`` prints the table; ``tests/unit/test_licences.py`` fails
when a runtime dependency's licence is not allowed.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Iterator
from importlib.metadata import Distribution, PackageMetadata, PackageNotFoundError, distribution
from pathlib import Path

import msgspec
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

# Trove classifiers and free-text licence fields seen on PyPI, mapped to SPDX identifiers.
_CLASSIFIERS = {
    "License :: OSI Approved :: MIT License": "MIT",
    "License :: OSI Approved :: BSD License": "BSD-3-Clause",
    "License :: OSI Approved :: Apache Software License": "Apache-2.0",
    "License :: OSI Approved :: ISC License (ISCL)": "ISC",
    "License :: OSI Approved :: Python Software Foundation License": "PSF-2.0",
    "License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "License :: OSI Approved :: GNU General Public License v2 (GPLv2)": "GPL-2.0-only",
    "License :: OSI Approved :: GNU General Public License v2 or later (GPLv2+)": (
        "GPL-2.0-or-later"
    ),
    "License :: OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
}
_TEXT = {
    "mit": "MIT",
    "mit license": "MIT",
    "bsd": "BSD-3-Clause",
    "bsd license": "BSD-3-Clause",
    "apache 2.0": "Apache-2.0",
    "apache-2.0": "Apache-2.0",
    "apache license 2.0": "Apache-2.0",
    "isc license": "ISC",
    "gplv2": "GPL-2.0-only",
    "psf-2.0": "PSF-2.0",
}
_SPDX_ID = re.compile(r"[A-Za-z0-9.+-]+")
_TOKEN = re.compile(r"\s*(\(|\)|[A-Za-z0-9.+-]+)")


class Licence(msgspec.Struct, frozen=True):
    """One installed runtime dependency and what its metadata says about its licence."""

    name: str
    version: str
    expression: str | None
    """SPDX expression, or None when the metadata names no licence we can read."""
    source: str
    """Where the expression came from: ``License-Expression``, ``classifier``, ``License``."""
    allowed: bool
    exception: str | None = None
    """Why a licence outside the allow-list is accepted for this package (from pyproject)."""


class Policy(msgspec.Struct, frozen=True):
    """The allow-list: SPDX identifiers, and per-package exceptions with their reason."""

    allowed: frozenset[str]
    exceptions: dict[str, str]

    @classmethod
    def load(cls, pyproject: Path = PYPROJECT) -> Policy:
        """``[tool.hes.licences]`` of pyproject.toml."""
        table = tomllib.loads(pyproject.read_text())["tool"]["hes"]["licences"]
        return cls(
            allowed=frozenset(table["allowed"]),
            exceptions={canonicalize_name(k): v for k, v in table.get("exceptions", {}).items()},
        )

    def permits(self, expression: str | None) -> bool:
        """True when the SPDX expression is satisfiable with allowed licences only."""
        return expression is not None and _satisfied(expression, self.allowed)


def runtime_distributions(root: str = "hes") -> list[Distribution]:
    """``root`` and everything its runtime requirements pull in (no optional extras of root)."""
    seen: dict[str, Distribution] = {}
    visited: set[tuple[str, frozenset[str]]] = set()

    def walk(name: str, extras: frozenset[str]) -> None:
        key = canonicalize_name(name)
        if (key, extras) in visited:
            return
        visited.add((key, extras))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            return  # a requirement whose marker excludes this platform
        seen[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            wanted = extras or frozenset({""})
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted):
                walk(req.name, frozenset(req.extras))

    walk(root, frozenset())
    seen.pop(canonicalize_name(root), None)
    return sorted(seen.values(), key=lambda d: canonicalize_name(d.metadata["Name"]))


def licence_of(dist: Distribution) -> tuple[str | None, str]:
    """The SPDX expression a distribution declares, and which metadata field said so."""
    meta = dist.metadata
    expression = _field(meta, "License-Expression")
    if expression:
        return expression.strip(), "License-Expression"
    classified = [_CLASSIFIERS[c] for c in meta.get_all("Classifier") or [] if c in _CLASSIFIERS]
    if classified:
        # Several licence classifiers mean the package may be used under any one of them.
        return " OR ".join(dict.fromkeys(classified)), "classifier"
    text = _field(meta, "License").strip()
    first_line = text.splitlines()[0].strip().lower() if text else ""
    if first_line in _TEXT:
        return _TEXT[first_line], "License"
    if _SPDX_ID.fullmatch(text) or " OR " in text or " AND " in text:
        return text, "License"
    return None, "none"


def _field(meta: PackageMetadata, name: str) -> str:
    values = meta.get_all(name) or []
    return str(values[0]) if values else ""


def report(policy: Policy, dists: Iterable[Distribution] | None = None) -> list[Licence]:
    """Every runtime dependency with its licence and the policy's verdict."""
    rows = []
    for dist in runtime_distributions() if dists is None else dists:
        name = canonicalize_name(dist.metadata["Name"])
        expression, source = licence_of(dist)
        exception = policy.exceptions.get(name)
        rows.append(
            Licence(
                name=name,
                version=dist.version,
                expression=expression,
                source=source,
                allowed=policy.permits(expression) or exception is not None,
                exception=exception,
            )
        )
    return rows


def _satisfied(expression: str, allowed: frozenset[str]) -> bool:
    """Evaluate ``A OR (B AND C)`` with each identifier true when it is allowed."""
    tokens = list(_tokens(expression))
    value, rest = _or(tokens, allowed)
    if rest:
        raise ValueError(f"cannot parse licence expression {expression!r}")
    return value


def _tokens(expression: str) -> Iterator[str]:
    pos = 0
    while pos < len(expression.rstrip()):
        match = _TOKEN.match(expression, pos)
        if match is None:
            raise ValueError(f"cannot parse licence expression {expression!r}")
        yield match.group(1)
        pos = match.end()


def _or(tokens: list[str], allowed: frozenset[str]) -> tuple[bool, list[str]]:
    value, rest = _and(tokens, allowed)
    while rest and rest[0].upper() == "OR":
        right, rest = _and(rest[1:], allowed)
        value = value or right
    return value, rest


def _and(tokens: list[str], allowed: frozenset[str]) -> tuple[bool, list[str]]:
    value, rest = _atom(tokens, allowed)
    while rest and rest[0].upper() == "AND":
        right, rest = _atom(rest[1:], allowed)
        value = value and right
    return value, rest


def _atom(tokens: list[str], allowed: frozenset[str]) -> tuple[bool, list[str]]:
    if not tokens:
        raise ValueError("licence expression ends too early")
    if tokens[0] == "(":
        value, rest = _or(tokens[1:], allowed)
        if not rest or rest[0] != ")":
            raise ValueError("unbalanced parenthesis in licence expression")
        return value, rest[1:]
    ident, rest = tokens[0], tokens[1:]
    if rest and rest[0].upper() == "WITH":  # "GPL-2.0-or-later WITH Classpath-exception-2.0"
        ident, rest = f"{ident} WITH {rest[1]}", rest[2:]
    return ident in allowed, rest
