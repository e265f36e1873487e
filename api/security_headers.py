"""Security headers on every HTTP response (HSTS only when the API is reached over HTTPS)."""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

# API answers (JSON, CSV, problem details) never need to load or run anything.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# Framework-rendered HTML pages (Swagger UI) bootstrap with an inline script; their scripts and
# styles come from /static (api/web). The console and GraphiQL set a stricter policy themselves.
PAGE_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HSTS = "max-age=31536000; includeSubDomains"


class SecurityHeadersMiddleware(ASGIMiddleware):
    """Adds CSP, nosniff, frame denial, referrer policy and (behind HTTPS) HSTS."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, *, https: bool) -> None:
        self.https = https

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Set the headers on the response start message, keeping any the handler set."""

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders(message)
                html = headers.get("content-type", "").startswith("text/html")
                defaults = {
                    "Content-Security-Policy": PAGE_CSP if html else API_CSP,
                    "X-Content-Type-Options": "nosniff",
                    "X-Frame-Options": "DENY",
                    "Referrer-Policy": "no-referrer",
                    "Cross-Origin-Opener-Policy": "same-origin",
                    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
                }
                if self.https:
                    defaults["Strict-Transport-Security"] = HSTS
                for name, value in defaults.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await next_app(scope, receive, send_with_headers)
