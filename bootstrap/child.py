"""The child side of ``hes up``'s supervision: say when ready, inherit sockets.

``hes up`` starts ``hes workers run`` and ``hes dlms run`` with the write end of a pipe in
``HES_NOTIFY_FD``; a child writes one line to it once it works, which is what the parent's
readiness and banner wait for. The parent also binds the DLMS push port itself and hands the
listening socket down in ``HES_DLMS_PUSH_FD`` (``-1``: no listener), so a restarted child never
races anyone for the port. Both are internal: set by the parent, never by users.
"""

from __future__ import annotations

import contextlib
import os
import socket

NOTIFY_FD = "HES_NOTIFY_FD"
PUSH_FD = "HES_DLMS_PUSH_FD"


def notify_ready() -> None:
    """Tell the supervising parent (if any) that this process works now."""
    fd = os.environ.pop(NOTIFY_FD, "")
    if not fd.isdigit():
        return
    with contextlib.suppress(OSError):  # the parent is gone: nothing to tell
        os.write(int(fd), b"ready\n")
    with contextlib.suppress(OSError):
        os.close(int(fd))


def inherited_push_socket() -> tuple[bool, socket.socket | None]:
    """(given, socket): the push socket the parent bound (None: run without a listener);
    ``given`` is False when no parent decided (standalone: bind the port yourself)."""
    value = os.environ.pop(PUSH_FD, "")
    if not value:
        return False, None
    if value == "-1":
        return True, None
    return True, socket.socket(fileno=int(value))
