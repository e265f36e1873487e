"""The Prometheus multi-process directory of one ``hes up`` instance and its children."""

import os
import shutil
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_metrics_dir(data_dir: Path, pid: int | None = None) -> Path:
    """Create this instance's empty metrics directory; remove those of instances that are gone."""
    # Several instances may share a data directory (API replicas on one host): each gets its
    # own subdirectory, so one starting never deletes another's live files.
    root = data_dir.resolve() / "metrics"
    root.mkdir(parents=True, exist_ok=True)
    own = pid if pid is not None else os.getpid()
    for entry in root.iterdir():
        stale = not entry.name.isdigit() or (int(entry.name) != own and not _alive(int(entry.name)))
        if stale:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    path = root / str(own)
    shutil.rmtree(path, ignore_errors=True)  # a previous instance that had our process id
    path.mkdir()
    return path
