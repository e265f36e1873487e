"""Key files under the data directory: created once, complete, private, even when processes race."""

import multiprocessing
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from adapters.key_file import load_or_create_key_file


def _race(path: str, barrier: Any, out: Any) -> None:
    barrier.wait()
    out.put(load_or_create_key_file(Path(path), lambda: secrets.token_hex(2048)))


def test_processes_starting_together_all_read_the_same_whole_key(tmp_path: Path) -> None:
    path = tmp_path / "data" / "some-key"
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(path), barrier, out)) for _ in range(8)]
    for proc in procs:
        proc.start()
    texts = [out.get(timeout=30) for _ in procs]
    for proc in procs:
        proc.join(30)
    assert len(set(texts)) == 1
    assert len(texts[0]) == 4096
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["some-key"]  # no temporary left


def test_an_existing_key_is_read_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "some-key"
    path.write_text("kept")
    assert load_or_create_key_file(path, lambda: "new") == "kept"
