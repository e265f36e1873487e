"""The `hes` command line against the real servers: token, import, migrate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.auth import TokenService
from commands.context import Role
from config.settings import Settings
from hes.cli import app
from tests.conftest import JWT_SECRET, new_serial

pytestmark = pytest.mark.integration

HEADER = (
    "meterNumber,concentratorId,meterType,brand,model,firmware,ipAddress,port,area,customer,"
    "simCard\n"
)


def _env(settings: Settings) -> dict[str, str]:
    return {
        "HES_DATABASE_URL": settings.database.url or "",
        "HES_NATS_URL": settings.nats.url or "",
        "HES_DB_SCHEMA": settings.database.schema,
        "HES_NATS_PREFIX": settings.nats.prefix,
        "HES_JWT_SECRET": JWT_SECRET,
        "HES_DATA_DIR": str(settings.runtime.data_dir),
    }


def test_token_is_verified_by_the_api_secret(settings: Settings) -> None:
    result = CliRunner().invoke(
        app, ["token", "--role", "operator", "--subject", "dana"], env=_env(settings)
    )
    assert result.exit_code == 0, result.output
    actor = TokenService(JWT_SECRET, "hes", "hes-api").verify(result.stdout.strip())
    assert actor.subject == "dana" and actor.roles == {Role.OPERATOR}

    customer = CliRunner().invoke(app, ["token", "--role", "customer"], env=_env(settings))
    assert customer.exit_code == 2
    assert "--customer is required" in customer.output


def test_import_meters_file_twice(settings: Settings, tmp_path: Path) -> None:
    a, b = new_serial("I"), new_serial("I")
    csv = tmp_path / "meters.csv"
    csv.write_text(
        HEADER
        + f"{a},DC-9,3P,Iskra,AM550,1.0,127.1.1.1,4059,Z-9,,\n"
        + f"{b},DC-9,1P,Iskra,AM550,1.0,127.1.1.2,4059,Z-9,,\n"
        + "X,DC-9,9P,Iskra,AM550,1.0,127.1.1.3,4059,Z-9,,\n"
    )
    first = CliRunner().invoke(
        app, ["import", "meters", str(csv), "--region", "Central", "--json"], env=_env(settings)
    )
    assert first.exit_code == 1, first.output  # one row was rejected
    report = json.loads(first.stdout.strip().splitlines()[-1])
    assert (report["created"], report["unchanged"], report["rejected"]) == (2, 0, 1)
    assert report["errors"][0]["line"] == 4 and report["errors"][0]["field"] == "phases"

    csv.write_text("\n".join(csv.read_text().splitlines()[:3]) + "\n")
    second = CliRunner().invoke(
        app, ["import", "meters", str(csv), "--region", "Central", "--json"], env=_env(settings)
    )
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout.strip().splitlines()[-1])["unchanged"] == 2

    # Same serials, other data: reported as conflicts, nothing overwritten.
    third = CliRunner().invoke(app, ["import", "meters", str(csv), "--json"], env=_env(settings))
    assert third.exit_code == 1
    errors = json.loads(third.stdout.strip().splitlines()[-1])["errors"]
    assert [e["reason"] for e in errors] == ["already registered with different region"] * 2


def test_bad_setting_names_the_variable(settings: Settings) -> None:
    result = CliRunner().invoke(app, ["migrate"], env={**_env(settings), "HES_PORT": "eighty"})
    assert result.exit_code == 2
    assert "HES_PORT" in result.output


def test_region_capacity_is_set_and_shown(settings: Settings) -> None:
    region = "CAP-" + new_serial("")[:6]
    shown = CliRunner().invoke(app, ["regions", "capacity", region], env=_env(settings))
    assert shown.exit_code == 0 and "default 10000 kW" in shown.stdout
    set_ = CliRunner().invoke(app, ["regions", "capacity", region, "2500"], env=_env(settings))
    assert set_.exit_code == 0 and f"{region}: 2500 kW" in set_.stdout
    bad = CliRunner().invoke(app, ["regions", "capacity", region, "-1"], env=_env(settings))
    assert bad.exit_code == 2


def test_region_capacity_cli_records_an_event_with_its_actor(settings: Settings) -> None:
    from commands.audit import history_of
    from commands.tariffs import TariffBook

    region = "CAP-" + new_serial("")[:6]
    args = ["regions", "capacity", region, "60", "--actor", "cli-test"]
    set_ = CliRunner().invoke(app, args, env=_env(settings))
    assert set_.exit_code == 0 and f"{region}: 60 kW" in set_.stdout
    same = CliRunner().invoke(app, args, env=_env(settings))
    assert same.exit_code == 0 and "unchanged" in same.stderr
    huge = CliRunner().invoke(app, ["regions", "capacity", region, "1e12"], env=_env(settings))
    assert huge.exit_code == 2 and "kw must be at most" in huge.output
    book = TariffBook(env=settings.database.eventsourcing_env())
    try:
        entries = history_of([book], region)
    finally:
        book.close()
    assert [(e.type, e.actor) for e in entries] == [
        ("Created", "cli-test"),
        ("CapacitySet", "cli-test"),
    ]
    assert entries[1].payload["capacity_w"] == 60_000.0


def test_export_intervals_command(settings: Settings) -> None:
    result = CliRunner().invoke(
        app,
        ["export", "intervals", "--date", "2020-01-01", "--interval", "M30"],
        env=_env(settings),
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["meters"] == 0 and report["subject"].endswith("hes.exports.intervals.2020-01-01")
    bad = CliRunner().invoke(app, ["export", "intervals", "--interval", "M1"], env=_env(settings))
    assert bad.exit_code == 2


def test_result_tables_are_not_cut_when_piped() -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    shown = subprocess.run(
        [sys.executable, "-m", "hes.cli", "licences"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    rows = [line for line in shown.splitlines() if "gurux-dlms" in line]
    assert rows and "GPL-2.0-only" in rows[0] and "classifier" in rows[0], shown
    assert "…" not in shown  # nothing ellipsised at 80 columns
    assert max(len(line) for line in shown.splitlines()) > 80


def test_part_commands_name_the_variable_when_no_hes_up_runs(tmp_path: Path) -> None:
    env = {"HES_DATA_DIR": str(tmp_path), "HES_DATABASE_URL": "", "HES_NATS_URL": ""}
    for args in (["events", "tail", "--limit", "1"], ["workers", "run"], ["projections", "run"]):
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 2, (args, result.output)
        assert "is not set and no embedded" in result.output, result.output
        assert "start `hes up`" in result.output.replace("\n", " "), result.output
