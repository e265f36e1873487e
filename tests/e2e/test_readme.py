"""README.md's shell examples, run in order against a started `hes up`: they do what they say.

Every ```sh block of the README is taken as it is. Blocks of `make` lines are checked with
`make -n`; all others run, in order, in one bash session (so variables carry over, as they do
for a reader), with two substitutions only: the README's address http://127.0.0.1:8000 becomes
the test server's, and `.venv/bin/` the directory of the running interpreter. `curl` fails on an
HTTP error status, so a refused request fails the test. A block added to the README later is
run the same way.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from bootstrap.embedded import spawn_child
from tests.e2e.test_up import _drop, _free_port, _hes, wait_ready
from tests.services import Services

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
README_BASE = "http://127.0.0.1:8000"
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
MAKE_LINE = re.compile(r"^make (\w+)\b")
PRELUDE = 'curl() { command curl --fail-with-body --max-time 60 "$@"; }\n'


def readme_blocks() -> tuple[list[str], list[str]]:
    """The make targets the README names, and its other shell blocks."""
    targets: list[str] = []
    scripts: list[str] = []
    for block in SH_BLOCK.findall((ROOT / "README.md").read_text()):
        commands = [line for line in block.splitlines() if line.strip() and line[0] != " "]
        made = [MAKE_LINE.match(line) for line in commands]
        if commands and all(made):
            targets += [m.group(1) for m in made if m is not None]
        else:
            scripts.append(block)
    return targets, scripts


SCRIPT_SECONDS = 600
"""The walk-through's own waits are bounded (the README's loop gives up after 5 minutes)."""


def _tail(path: Path, lines: int = 40, width: int = 240) -> str:
    """The last ``lines`` lines of a text file, each cut to ``width``, or a note it is missing."""
    if not path.exists():
        return f"({path.name} missing)"
    return "\n".join(
        line[:width] for line in path.read_text(errors="replace").splitlines()[-lines:]
    )


def _text(output: str | bytes | None) -> str:
    """A timed-out run's captured output as text."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _json_documents(output: str) -> list[Any]:
    """Every JSON object or array printed (curl prints no newline after an answer)."""
    decoder = json.JSONDecoder()
    found, pos = [], 0
    while (
        start := min(
            (i for i in (output.find("{", pos), output.find("[", pos)) if i >= 0), default=-1
        )
    ) >= 0:
        try:
            value, pos = decoder.raw_decode(output, start)
        except json.JSONDecodeError:
            pos = start + 1
            continue
        found.append(value)
    return found


def _next_open(output: str, pos: int) -> int:
    starts = [i for i in (output.find("{", pos), output.find("[", pos)) if i >= 0]
    return min(starts, default=-1)


def _walk(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value, *(d for v in value.values() for d in _walk(v))]
    if isinstance(value, list):
        return [d for v in value for d in _walk(v)]
    return []


def test_the_readme_make_targets_exist() -> None:
    targets, _ = readme_blocks()
    assert {"up", "test"} <= set(targets)
    result = subprocess.run(
        ["make", "-n", *targets], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.timeout(900)  # the walk-through simulates a fleet and waits for alerts
def test_every_readme_shell_example_runs_against_a_started_system(
    services: Services, tmp_path: Path
) -> None:
    _, scripts = readme_blocks()
    assert len(scripts) >= 4
    schema = f"r_{uuid.uuid4().hex[:8]}"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HES_")}
    env.update(
        PYTHONPATH=str(ROOT),
        HES_DATABASE_URL=services.database_url,
        HES_NATS_URL=services.nats_url,
        HES_DB_SCHEMA=schema,
        HES_NATS_PREFIX=schema.upper() + "_",
        HES_PORT=str(port),
        HES_DATA_DIR=str(tmp_path / "data"),
        HES_LOG_LEVEL="WARNING",
        HES_RUN_DLMS="false",  # no meter to talk to; keeps the push port free
        HES_DLMS_PUSH_PORT=str(_free_port()),
        # as the walk-through tells the reader to start it, for its loopback webhook receiver
        HES_WEBHOOK_HTTP_HOSTS="127.0.0.1",
        HES_WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32",
    )
    (tmp_path / "data").mkdir()
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = spawn_child(
            _hes(env, "up"),
            death_signal=signal.SIGTERM,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(proc, base, log, seconds=90)

        bin_dir = f"{Path(sys.executable).parent}/"
        script = (
            "PS4='+ $(date -u +%T) '\n"
            + PRELUDE
            + "\n".join(
                block.replace(README_BASE, base).replace(".venv/bin/", bin_dir) for block in scripts
            )
        )
        (tmp_path / "readme.sh").write_text(script)
        trace = tmp_path / "readme.trace"
        # Each command is traced with the time it started, so a slow or stuck step is named.
        env_traced = {**env, "BASH_XTRACEFD": "7"}
        try:
            ran = subprocess.run(
                [
                    "bash",
                    "-c",
                    f"exec 7>{shlex.quote(str(trace))}; exec bash -x -euo pipefail readme.sh",
                ],
                cwd=tmp_path,
                env=env_traced,
                capture_output=True,
                text=True,
                timeout=SCRIPT_SECONDS,
            )
        except subprocess.TimeoutExpired as late:
            pytest.fail(
                f"the walk-through took over {SCRIPT_SECONDS} s\n"
                f"trace (tail):\n{_tail(trace)}\nstdout:\n{_text(late.stdout)[-3000:]}\n"
                f"stderr:\n{_text(late.stderr)[-3000:]}\nhes up log (tail):\n{_tail(log)}"
            )
        where = (
            f"stdout:\n{ran.stdout[-4000:]}\nstderr:\n{ran.stderr[-4000:]}\n"
            f"trace (tail):\n{_tail(trace)}"
        )
        assert ran.returncode == 0, where
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        _drop(services, schema)

    answers = _json_documents(ran.stdout)
    objects = [d for a in answers for d in _walk(a)]
    assert not [a for a in answers if isinstance(a, dict) and a.get("errors")], where
    typenames = [d["__typename"] for d in objects if "__typename" in d]
    assert "Meter" in typenames and not [t for t in typenames if t.endswith("Error")], where
    assert {"accepted": 3, "rejected": 0, "errors": []} in answers, where  # the telemetry POST
    imported = [a for a in answers if isinstance(a, dict) and "rows" in a and "created" in a]
    assert imported and imported[0]["rejected"] == 0, where  # the CSV template imports
    simulated = [a for a in answers if isinstance(a, dict) and "readings_per_s" in a]
    assert len(simulated) == 2 and all(s["accepted"] > 0 and s["failed"] == 0 for s in simulated)
    statuses = [d["status"] for d in objects if d.get("__typename") == "Alert"]
    assert statuses == ["ACKNOWLEDGED", "RESOLVED"], where
    history = next(a for a in answers if isinstance(a, dict) and "history" in a.get("data", {}))
    actors = [(e["type"], e["actor"]) for e in history["data"]["history"]]
    assert ("Raised", "system") in actors and ("Resolved", "anna") in actors, actors
