"""GraphQL permission classes shared by every part of the schema."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission
from strawberry.types import Info

from api.auth import Unauthenticated
from api.context import RequestContext

ContextInfo = Info[RequestContext, None]


class IsAuthenticated(BasePermission):
    """The request carries a valid bearer token."""

    message = "authentication required"
    error_extensions = {"code": "UNAUTHENTICATED"}

    def has_permission(self, source: Any, info: ContextInfo, **kwargs: Any) -> bool:
        """True when the bearer token verifies; the reason becomes the error message."""
        try:
            info.context.actor()
        except Unauthenticated as exc:
            self.message = f"authentication required: {exc}"
            return False
        return True
