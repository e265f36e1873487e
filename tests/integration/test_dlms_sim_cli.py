"""``hes simulate --dlms``: a real process serving meters, a keys file, clean stops."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.dlms.simulator import simulated_keys
from hes.cli import app
from tests.integration.dlms_clients import cosem_client
from tests.integration.test_dlms_interop import free_base_port

pytestmark = pytest.mark.integration

HES = [sys.executable, "-c", "from hes.cli import main; main()"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HES_DATA_DIR": str(tmp_path / "data"), "HES_LOG_LEVEL": "INFO"}


def _wait_for_port(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"port {port} never opened")


def test_simulate_dlms_serves_meters_writes_keys_and_stops(tmp_path: Path) -> None:
    base = free_base_port(3)
    keys_file = tmp_path / "keys.csv"
    proc = subprocess.Popen(
        [*HES, "simulate", "--dlms", "--meters", "3", "--base-port", str(base), "--duration",
         "6s", "--write-keys", str(keys_file), "--seed", "cli-seed"],
        env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for_port(base + 2, proc)
        keys = simulated_keys("SIM0000002", "cli-seed")
        with cosem_client(base + 2, "hdlc", "hls", keys).session() as session:
            from dlms_cosem import cosem  # type: ignore[import-untyped]
            from dlms_cosem import enumerations as E
            from dlms_cosem.utils import parse_as_dlms_data  # type: ignore[import-untyped]

            serial = parse_as_dlms_data(
                session.get(
                    cosem.CosemAttribute(
                        E.CosemInterface.DATA, cosem.Obis.from_string("0.0.96.1.0.255"), 2
                    )
                )
            )
        assert serial == "SIM0000002"
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["meters"] == 3 and summary["base_port"] == base
    assert summary["state_dir"] == str(tmp_path / "data" / "dlms-sim")
    assert (tmp_path / "data" / "dlms-sim" / "SIM0000002.json").exists()  # HLS counters
    rows = keys_file.read_text().splitlines()
    assert rows[0] == "serial,lls_password,ek_hex,ak_hex,system_title_hex"
    assert rows[3] == keys.csv_row() and len(rows) == 4


def test_ctrl_c_stops_cleanly_with_a_summary(tmp_path: Path) -> None:
    base = free_base_port(1)
    proc = subprocess.Popen(
        [*HES, "simulate", "--dlms", "--meters", "1", "--base-port", str(base)],
        env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for_port(base, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["interrupted"] is True


def test_bad_options_name_the_option(tmp_path: Path) -> None:
    env = {"HES_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    bad_push = runner.invoke(app, ["simulate", "--dlms", "--push-to", "nowhere"], env=env)
    assert bad_push.exit_code == 2 and "--push-to" in bad_push.output
    bad_port = runner.invoke(
        app, ["simulate", "--dlms", "--base-port", "65535", "--meters", "5"], env=env
    )
    assert bad_port.exit_code == 2 and "--base-port" in bad_port.output
    bad_behaviour = runner.invoke(
        app, ["simulate", "--dlms", "--behaviour", "no-counter,grumpy"], env=env
    )
    assert bad_behaviour.exit_code == 2 and "--behaviour" in bad_behaviour.output
    assert "grumpy" in bad_behaviour.output
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        busy = runner.invoke(
            app,
            ["simulate", "--dlms", "--meters", "1", "--base-port", str(port), "--duration", "1s"],
            env=env,
        )
    finally:
        taken.close()
    assert busy.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in busy.output
