"""Gives every HTTP request a correlation id and echoes it in the response."""

from __future__ import annotations

from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.context import correlation_id
from config.logs import CORRELATION_ID

HEADER = b"x-correlation-id"


class CorrelationIdMiddleware(ASGIMiddleware):
    """Keeps a well-formed ``X-Correlation-ID`` or replaces it; logs and the response carry it."""

    scopes = ("http", "websocket")  # type: ignore[assignment]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Normalise the request header, then add it to the response start message."""
        headers = [(k, v) for k, v in scope["headers"] if k != HEADER]
        given = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        value = correlation_id(given).encode()
        scope["headers"] = [*headers, (HEADER, value)]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (HEADER, value)]
            await send(message)

        token = CORRELATION_ID.set(value.decode())
        try:
            await next_app(scope, receive, send_with_id)
        finally:
            CORRELATION_ID.reset(token)
