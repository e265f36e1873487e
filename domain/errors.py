"""Domain errors: every rule a command can break, named by field and rule."""

from __future__ import annotations

import msgspec


class FieldError(msgspec.Struct, frozen=True):
    """One broken rule on one input field."""

    field: str
    rule: str
    message: str


class DomainError(Exception):
    """Base class of every error a command can raise on purpose."""

    code = "DOMAIN_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationFailed(DomainError):
    """The input breaks one or more field rules; nothing was recorded."""

    code = "VALIDATION"

    def __init__(self, errors: list[FieldError]) -> None:
        summary = "; ".join(f"{e.field}: {e.message}" for e in errors)
        super().__init__(f"invalid input: {summary}")
        self.errors = errors


class NotFound(DomainError):
    """The aggregate named by the command does not exist."""

    code = "NOT_FOUND"


class Conflict(DomainError):
    """The command contradicts the aggregate's current state."""

    code = "CONFLICT"


class Forbidden(DomainError):
    """The actor's role does not allow this command or this object."""

    code = "FORBIDDEN"


class BackPressure(Exception):
    """The reading transport cannot take more now; nothing half-accepted, retry later (503)."""


class Collector:
    """Gathers field errors so that one answer names every broken rule."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, field: str, rule: str, message: str) -> None:
        """Record one broken rule."""
        self.errors.append(FieldError(field, rule, message))

    def raise_if_any(self) -> None:
        """Raise ``ValidationFailed`` when any rule was broken."""
        if self.errors:
            raise ValidationFailed(self.errors)
