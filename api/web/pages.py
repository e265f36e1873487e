"""The browser pages the API serves from its own files: the operator console, GraphiQL and the
OpenAPI viewer, with every script and style under ``/static`` (nothing from a CDN).

The console is static ES modules (``api/web/static/console``) over vendored libraries
(``api/web/static/vendor``, fetched by ``api/web/vendor.sh``); no build step. See docs/console.md.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path

from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/static"
CONSOLE_PATH = "/console"
FAVICON = f"<link rel='icon' type='image/svg+xml' href='{STATIC_PATH}/console/favicon.svg'>"
_INLINE_SCRIPT = re.compile(r"<script(?: [^>]*)?>(.*?)</script>", re.DOTALL)
# Revalidate on every load (ETag / Last-Modified make that a 304): an upgrade is seen at once.
_REVALIDATE = CacheControlHeader(no_cache=True)


def page_csp(html: str, *, inline_styles: bool = False) -> str:
    """A CSP for one of our pages: own files only, its inline scripts allowed by their hash."""
    scripts = " ".join(
        [
            "'self'",
            *(
                "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
                for body in _INLINE_SCRIPT.findall(html)
                if body.strip()
            ),
        ]
    )
    styles = "'self' 'unsafe-inline'" if inline_styles else "'self'"
    return (
        f"default-src 'self'; script-src {scripts}; style-src {styles}; "
        "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self' ws: wss:; "
        "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


@cache
def _page(name: str) -> tuple[str, str]:
    html = (STATIC_DIR / name).read_text(encoding="utf-8")
    return html, page_csp(html, inline_styles=name.startswith("graphiql/"))


def html_page(name: str) -> Response[str]:
    """The HTML file ``static/<name>`` with its own content security policy."""
    html, csp = _page(name)
    return Response(
        html,
        media_type="text/html",
        headers={"Content-Security-Policy": csp, "Cache-Control": _REVALIDATE.to_header()},
    )


@get(CONSOLE_PATH, include_in_schema=False, sync_to_thread=False)
def console_page() -> Response[str]:
    """The operator console (a single page; its views are addressed by the URL fragment)."""
    return html_page("console/index.html")


def static_files() -> Router:
    """``/static/…``: the console's modules, styles and the vendored libraries."""
    return create_static_files_router(
        path=STATIC_PATH,
        directories=[STATIC_DIR],
        cache_control=_REVALIDATE,
        include_in_schema=False,
    )


def swagger_plugin() -> SwaggerRenderPlugin:
    """Swagger UI at ``/schema`` and ``/schema/swagger``, from the vendored swagger-ui-dist."""
    base = f"{STATIC_PATH}/vendor/swagger-ui"
    return SwaggerRenderPlugin(
        js_url=f"{base}/swagger-ui-bundle.js",
        css_url=f"{base}/swagger-ui.css",
        standalone_preset_js_url=f"{base}/swagger-ui-standalone-preset.js",
        path="/swagger",
        favicon=FAVICON,
    )
