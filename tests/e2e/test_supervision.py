"""`hes up` supervision tells the truth: ports taken, children and servers killed, parent killed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_up import ROOT, _drop, _free_port, _hes, configured_env
from tests.services import Services

pytestmark = pytest.mark.e2e


def _configured(services: Services, tmp_path: Path) -> dict[str, str]:
    return configured_env(services, tmp_path, prefix="s")


def _embedded(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HES_")}
    return env | {
        "PYTHONPATH": str(ROOT),
        "HES_PORT": str(_free_port()),
        "HES_DLMS_PUSH_PORT": str(_free_port()),
        "HES_DATA_DIR": str(tmp_path / "hes-data"),
        "HES_LOG_LEVEL": "WARNING",
    }


@contextmanager
def _up(
    env: dict[str, str], log: Path, stop: int = signal.SIGINT
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(_hes(env, "up"), env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(stop)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _ready(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    try:
        answer = httpx.get(f"http://127.0.0.1:{env['HES_PORT']}/health/ready", timeout=5)
    except httpx.TransportError as exc:
        return 0, {"error": str(exc)}
    return answer.status_code, answer.json()


def _until(
    proc: subprocess.Popen[bytes],
    log: Path,
    check: Callable[[], bool],
    seconds: float = 90.0,
    pause: float = 0.1,
) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()[-5000:]
        time.sleep(pause)


def _pid_in(detail: str) -> int:
    return int(detail.split("pid ")[1].split(")")[0].split(",")[0])


def _children(parent: int) -> set[int]:
    """Processes whose parent is ``parent`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == parent:
                found.add(int(entry.name))
    return found


def _alive(pid: int, *, zombies: bool = True) -> bool:
    """True while ``pid`` exists; a zombie (dead, not yet reaped) counts unless ``zombies``."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return zombies or stat.rpartition(")")[2].split()[0] != "Z"


def _kill_and_watch(
    proc: subprocess.Popen[bytes], log: Path, env: dict[str, str], part: str, sig: int
) -> None:
    """Kill a part; readiness says 503 naming it, then 200 with it running again."""
    _, body = _ready(env)
    old = _pid_in(body["checks"][part]["detail"])
    os.kill(old, sig)
    seen: list[str] = []

    def down() -> bool:
        code, body = _ready(env)
        check = body.get("checks", {}).get(part)
        if code == 503 and check is not None and not check["ok"]:
            seen.append(check["detail"])
        return bool(seen)

    _until(proc, log, lambda: not _alive(old), pause=0.02)  # reaped, not left <defunct>
    _until(proc, log, down, pause=0.02)

    def back() -> bool:
        code, body = _ready(env)
        return code == 200 and _pid_in(body["checks"][part]["detail"]) != old

    _until(proc, log, back, pause=0.2)


def test_up_fails_fast_when_its_http_port_is_taken(services: Services, tmp_path: Path) -> None:
    env = _configured(services, tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["HES_PORT"])))
        taken.listen()
        result = subprocess.run(
            _hes(env, "up"), env=env, capture_output=True, text=True, timeout=60, check=False
        )
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert f"127.0.0.1:{env['HES_PORT']} is already in use" in message, result.stderr
    assert "HES_PORT" in message
    assert "PostgreSQL" not in result.stderr  # nothing was started before the check


def test_children_restart_and_readiness_names_a_dead_child_and_a_taken_push_port(
    services: Services, tmp_path: Path
) -> None:
    env = _configured(services, tmp_path)
    log = tmp_path / "up.log"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["HES_DLMS_PUSH_PORT"])))
        taken.listen()
        try:
            with _up(env, log) as proc:

                def started() -> bool:
                    _, body = _ready(env)
                    return "dlms_push" in body.get("checks", {})

                _until(proc, log, started)
                code, body = _ready(env)
                push = body["checks"]["dlms_push"]
                assert code == 503 and not push["ok"], body
                assert "already in use" in push["detail"] and "HES_DLMS_PUSH_PORT" in push["detail"]
                failing = {name for name, check in body["checks"].items() if not check["ok"]}
                assert failing == {"dlms_push"}, body  # everything else runs: DLMS collects
                assert "DLMS push listener: not listening" in log.read_text()
                assert "✓ DLMS collector and command executor running" in log.read_text()
        finally:
            _drop(services, env["HES_DB_SCHEMA"])

    env = _configured(services, tmp_path / "second")
    try:
        with _up(env, tmp_path / "up2.log", stop=signal.SIGTERM) as proc:
            log = tmp_path / "up2.log"
            _until(proc, log, lambda: _ready(env)[0] == 200)
            for part in ("reading_workers", "dlms_workers"):
                _kill_and_watch(proc, log, env, part, signal.SIGKILL)
            children = _children(proc.pid)
            assert len(children) == 2, children
        # `hes up` stopped by SIGTERM stops its children first: none is left behind.
        assert proc.returncode in (0, 130), log.read_text()[-3000:]
        assert {pid for pid in children if _alive(pid, zombies=False)} == set()
    finally:
        _drop(services, env["HES_DB_SCHEMA"])


def test_embedded_servers_come_back_and_everything_dies_with_a_killed_parent(
    tmp_path: Path,
) -> None:
    env = _embedded(tmp_path)
    log = tmp_path / "up.log"
    with _up(env, log) as proc:
        _until(proc, log, lambda: _ready(env)[0] == 200)
        _kill_and_watch(proc, log, env, "embedded_nats", signal.SIGTERM)
        _kill_and_watch(proc, log, env, "embedded_postgres", signal.SIGKILL)
        code, body = _ready(env)
        assert code == 200, body

        children = _children(proc.pid)
        assert len(children) >= 4, children  # PostgreSQL, NATS, reading workers, DLMS
        proc.kill()
        proc.wait(10)
        killed = time.monotonic()
        # Orphans are reaped by whoever adopts them, maybe late: a zombie counts as gone.
        while any(_alive(p, zombies=False) for p in children) and time.monotonic() - killed < 2:
            time.sleep(0.05)
        left = {pid for pid in children if _alive(pid, zombies=False)}
        for pid in left:  # clean up before failing
            os.kill(pid, signal.SIGKILL)
        assert left == set(), f"still running 2 s after the parent was killed: {left}"
