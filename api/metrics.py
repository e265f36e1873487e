"""Prometheus scrape endpoint (aggregating worker processes when `hes up` started them).

With ``HES_METRICS_TOKEN`` set it answers only ``Authorization: Bearer <token>`` (Prometheus
``authorization: {credentials: ...}``); metrics carry no secrets but do map the fleet.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from api.auth import Unauthenticated
from api.denials import Reason, record_denial

TARGET = "GET /metrics"


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def metrics_endpoint(token: str | None) -> HTTPRouteHandler:
    """The scrape route: open, or closed to everyone without the bearer ``token``."""
    expected = None if token is None else f"Bearer {token}".encode()

    @get("/metrics", summary="Prometheus metrics", tags=["health"], sync_to_thread=False)
    def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Every metric of this process (and its worker children) in the Prometheus text format."""
        if expected is not None:
            given = request.headers.get("authorization", "").strip().encode()
            if not hmac.compare_digest(given, expected):
                message = "/metrics needs the metrics bearer token (HES_METRICS_TOKEN)"
                record_denial("rest", TARGET, Reason.UNAUTHENTICATED, None, message)
                raise Unauthenticated(message)
        return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)

    return metrics
