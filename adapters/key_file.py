"""Secrets kept in files under the data directory, created once even by processes racing."""

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def load_or_create_key_file(path: Path, make: Callable[[], str]) -> str:
    """The text of ``path``; written from ``make()`` (mode 0600) when no process has yet."""
    # The new secret is written in full to a temporary file and then hard-linked into place:
    # the link fails if another process got there first, and nobody ever reads a half file.
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as handle:  # mkstemp creates it with mode 0600
                handle.write(make())
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process was first: use theirs
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    return path.read_text()
