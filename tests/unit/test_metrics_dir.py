"""Each ``hes up`` instance has its own metrics directory; one starting never empties another's."""

import subprocess
import sys
from pathlib import Path

from bootstrap.metrics_dir import prepare_metrics_dir


def _gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_two_instances_sharing_a_data_dir_keep_each_others_files(tmp_path: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        theirs = prepare_metrics_dir(tmp_path, pid=live.pid)
        (theirs / "counter_1.db").write_bytes(b"x")
        ours = prepare_metrics_dir(tmp_path)
        assert ours != theirs
        assert (theirs / "counter_1.db").exists()
        assert list(ours.iterdir()) == []
    finally:
        live.kill()
        live.wait()


def test_directories_of_instances_that_are_gone_are_removed(tmp_path: Path) -> None:
    stale = prepare_metrics_dir(tmp_path, pid=_gone_pid())
    (stale / "gauge_all_1.db").write_bytes(b"x")
    (tmp_path / "metrics" / "counter_7.db").write_bytes(b"old layout")
    ours = prepare_metrics_dir(tmp_path)
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == [ours.name]


def test_a_previous_instance_with_our_process_id_leaves_nothing_behind(tmp_path: Path) -> None:
    first = prepare_metrics_dir(tmp_path)
    (first / "counter_1.db").write_bytes(b"x")
    again = prepare_metrics_dir(tmp_path)
    assert again == first
    assert list(again.iterdir()) == []
