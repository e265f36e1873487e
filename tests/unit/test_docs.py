"""The documentation is checked against the code: settings, names, links, the GraphQL SDL."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
import yaml

from api.graphql.schema import sdl
from config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
FIELDS = Settings.variables()
TEST_VARIABLES = {
    "HES_TEST_DATABASE_URL",
    "HES_TEST_NATS_URL",
    "HES_TEST_REDIS_URL",
    "HES_TEST_BROWSER",
    "HES_TEST_CHROMIUM",
    "HES_TEST_SCREENSHOT_DIR",
}
"""Variables of the test suite (not of the product), named in the docs."""
STREAMS = {"HES_EVENTS", "HES_DEADLETTER"}
"""JetStream stream names that look like variables."""
ROW = re.compile(r"^\| `(HES_[A-Z0-9_]+)` \| ([^|]*) \|", re.MULTILINE)


def _settings_table() -> dict[str, str]:
    text = (ROOT / "docs" / "configuration.md").read_text()
    return {name: default.strip() for name, default in ROW.findall(text)}


def _documented_default(cell: str) -> object:
    if cell.startswith("unset"):
        return None
    if cell == "empty":
        return ""
    return cell.strip("`")


def _matches(field: msgspec.structs.FieldInfo, documented: object) -> bool:
    default = field.default
    if default is None or documented is None:
        return default is None and documented is None
    if isinstance(default, bool):
        return str(documented) == str(default).lower()
    if isinstance(default, int | float):
        return float(str(documented)) == float(default)
    return str(documented) == str(default)


def test_every_setting_has_a_row_in_configuration_md_with_its_default() -> None:
    table = _settings_table()
    missing = sorted(set(FIELDS) - set(table))
    assert not missing, f"docs/configuration.md has no row for {missing}"
    wrong = {
        name: (table[name], field.default)
        for name, field in FIELDS.items()
        if not _matches(field, _documented_default(table[name]))
    }
    assert not wrong, f"documented default differs from config/settings.py: {wrong}"


def test_no_page_names_a_setting_that_does_not_exist() -> None:
    files = [*PAGES, ROOT / "docker-compose.yml", ROOT / "Dockerfile"]
    unknown = {
        f"{path.name}: {name}"
        for path in files
        for name in re.findall(r"\bHES_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())
        if name not in set(FIELDS) | TEST_VARIABLES | STREAMS
    }
    assert not unknown, f"not a setting in config/settings.py: {sorted(unknown)}"


def test_compose_sets_only_real_settings_and_publishes_the_ports_they_name() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["x-hes-env"]
    assert set(env) <= set(FIELDS)
    api = compose["services"]["api"]
    assert f"{env['HES_PORT']}:{env['HES_PORT']}" in api["ports"]
    push_port = FIELDS["HES_DLMS_PUSH_PORT"].default
    assert f"{push_port}:{push_port}" in [p.split()[0] for p in api["ports"]]


def _anchors(page: Path) -> set[str]:
    slugs = set()
    for heading in re.findall(r"^#+ (.+)$", page.read_text(), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_reach_a_file_and_heading(page: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # an outside address
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or (
            anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved)
        ):
            broken.append(target)
    assert not broken, f"{page.name}: links to nothing: {broken}"


def test_the_committed_graphql_sdl_is_the_schema_of_the_code() -> None:
    committed = (ROOT / "docs" / "schema.graphql").read_text()
    hint = "docs/schema.graphql is stale: run `hes schema graphql --out docs/schema.graphql`"
    assert committed == sdl(), hint


def _fenced(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), re.MULTILINE | re.DOTALL)


def test_the_webhook_verification_examples_in_notifications_md_work() -> None:
    import time

    from adapters.notify.secret_box import new_webhook_secret
    from domain.notifications import webhook_headers

    secret, body = new_webhook_secret(), b'{"kind":"ALERT_RAISED"}'
    headers = webhook_headers(secret, "delivery-1", int(time.time()), body)
    namespace: dict[str, object] = {}
    for block in _fenced(ROOT / "docs" / "notifications.md", "python"):
        exec(compile(block, "notifications.md", "exec"), namespace)
    receive, verify = namespace["receive"], namespace["verify"]
    assert callable(receive) and callable(verify)
    assert receive(secret, headers, body) == {"kind": "ALERT_RAISED"}
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body + b" ")
    with pytest.raises(PermissionError):
        receive(new_webhook_secret(), headers, body)


def test_integrators_md_lists_every_relayed_event_type() -> None:
    from adapters.nats.cloudevents import event_type_of_class
    from adapters.nats.event_schemas import AGGREGATES, event_classes

    relayed = set()
    for aggregate in AGGREGATES:
        for cls in event_classes(aggregate):
            kind = event_type_of_class(cls)
            relayed.add(f"hes.{kind.aggregate}.{kind.name}.v{getattr(cls, 'class_version', 1)}")
    text = (ROOT / "docs" / "integrators.md").read_text()
    listed = set(re.findall(r"^\| `(hes\.[a-z]+\.[A-Za-z]+\.v\d+)` \|", text, re.MULTILINE))
    assert listed == relayed, f"missing {relayed - listed}, not relayed {listed - relayed}"
    assert f"The {len(relayed)} event types" in text
    schemas = {p.name.removesuffix(".json") for p in (ROOT / "docs/events/schemas").glob("hes.*")}
    assert relayed <= schemas
    # Earlier versions stay next to the current one (integrators.md, "Schemas and versioning"):
    # events recorded before an incompatible change keep their old type.
    current = {t.rsplit(".v", 1)[0]: int(t.rsplit(".v", 1)[1]) for t in relayed}
    older = {
        t
        for t in schemas - relayed
        if int(t.rsplit(".v", 1)[1]) < current.get(t.rsplit(".v", 1)[0], 0)
    }
    assert schemas - relayed == older, f"schemas of no relayed type: {schemas - relayed - older}"
