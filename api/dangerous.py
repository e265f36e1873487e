"""Dangerous commands: explicit confirmation and a per-actor hourly limit, refusals logged.

A command is dangerous when it switches off many customers at once (a relay disconnect of more
than ``HES_DANGEROUS_BULK_THRESHOLD`` meters) or changes key material (``always=True``). The
caller must then send ``confirm`` equal to ``"<action> <count>"`` (e.g. ``disconnectMeters 25``),
so a script or a mis-click cannot trigger it by accident, and each actor may run at most
``HES_DANGEROUS_PER_HOUR`` of them per clock hour. The count is a ``WindowCounter``: in Redis when
configured, incremented atomically, so the limit holds exactly across API replicas.

Use from a resolver or handler, before running the command::

    await ctx.dangerous.admit(actor, "disconnectMeters", count=len(ids), confirm=confirm)
"""

from __future__ import annotations

import time

from adapters.window_counters import WindowCounter
from api.denials import Reason, record_denial
from commands.context import Actor
from domain.errors import DomainError, FieldError, ValidationFailed


class ConfirmationRequired(ValidationFailed):
    """A dangerous command came without the exact confirmation (field ``confirm``)."""


class DangerousRateLimited(DomainError):
    """The actor ran as many dangerous commands this hour as allowed."""

    code = "RATE_LIMITED"


def phrase(action: str, count: int) -> str:
    """The confirmation a dangerous ``action`` on ``count`` objects needs."""
    return f"{action} {count}"


class DangerousCommands:
    """Admits or refuses dangerous commands per the confirmation and per-actor hourly limit."""

    def __init__(self, counter: WindowCounter, *, bulk_threshold: int, per_hour: int) -> None:
        self._counter = counter
        self.bulk_threshold = bulk_threshold
        self.per_hour = per_hour

    def is_dangerous(self, count: int, *, always: bool = False) -> bool:
        """True when a command on ``count`` objects needs confirmation."""
        return always or count > self.bulk_threshold

    async def admit(
        self,
        actor: Actor,
        action: str,
        *,
        confirm: str | None,
        count: int = 1,
        always: bool = False,
        interface: str = "graphql",
    ) -> None:
        """Return when the command may run; raise (and log, and count) when it may not.

        ``action`` must be a fixed name (a field or command name), never caller input.
        """
        if not self.is_dangerous(count, always=always):
            return
        expected = phrase(action, count)
        if confirm is None or confirm.strip() != expected:
            message = (
                f"{action} affects {count} meter(s) and cannot be undone by accident: "
                f"set confirm to {expected!r}"
            )
            record_denial(interface, action, Reason.CONFIRMATION_REQUIRED, actor.subject, message)
            raise ConfirmationRequired([FieldError("confirm", "confirmation", message)])
        used = await self._take(actor.subject)
        if used > self.per_hour:
            message = (
                f"{actor.subject} already ran {self.per_hour} dangerous commands this hour;"
                " try again next hour or ask another operator"
            )
            record_denial(interface, action, Reason.RATE_LIMITED, actor.subject, message)
            raise DangerousRateLimited(message)

    async def _take(self, subject: str) -> int:
        """Count one more dangerous command for ``subject`` in this hour; return the count."""
        window = int(time.time() // 3600)
        return await self._counter.increment(f"{subject}:{window}", 3600 + 60)
