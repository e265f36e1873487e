"""The per-caller rate limit: exact-path exemptions, trusted-proxy addresses, ``Retry-After``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from litestar import Request
from litestar.exceptions import TooManyRequestsException
from litestar.middleware import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig, RateLimitMiddleware
from litestar.types import Receive, Scope, Send

from api.authentication import authentication_of
from api.client_address import client_address
from domain.networks import Network

EXEMPT_PATHS = (
    r"^/health/(?:live|ready)$",
    r"^/metrics$",
    r"^/schema(?:/(?:openapi\.(?:json|yaml|yml)|swagger|oauth2-redirect\.html))?$",
    r"^/console$",
    r"^/static/",
)
"""Probes, the scraper, the API description and the console's page and files, matched from the
start of the path (never as substrings)."""


def rate_limit_key(trusted: Sequence[Network]) -> Callable[[Request[Any, Any, Any]], str]:
    """Rate-limit key: the authenticated caller, else the client address (proxies trusted)."""

    def key(request: Request[Any, Any, Any]) -> str:
        auth = authentication_of(request.scope)
        if auth.actor is not None:
            return f"actor:{auth.actor.subject}"
        return f"ip:{client_address(request.scope, trusted)}"

    return key


class RetryAfterRateLimitMiddleware(RateLimitMiddleware):
    """Litestar's rate limit, whose 429 also says when to come back (``Retry-After``)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request; a refusal carries ``Retry-After`` (seconds until the window ends)."""
        try:
            await super().__call__(scope, receive, send)
        except TooManyRequestsException as exc:
            headers = dict(exc.headers or {})
            if "Retry-After" not in headers:
                reset = headers.get(self.config.rate_limit_reset_header_key, "1")
                headers["Retry-After"] = str(max(1, int(reset) if reset.isdigit() else 1))
                exc.headers = headers
            raise


def rate_limit(per_minute: int, trusted: Sequence[Network]) -> DefineMiddleware:
    """The rate-limit middleware of the API."""
    config = RateLimitConfig(
        rate_limit=("minute", per_minute),
        exclude=list(EXEMPT_PATHS),
        identifier_for_request=rate_limit_key(trusted),
    )
    return DefineMiddleware(RetryAfterRateLimitMiddleware, config=config)
