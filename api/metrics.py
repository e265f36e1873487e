"""Prometheus scrape endpoint."""

from __future__ import annotations

from litestar import Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


@get("/metrics", summary="Prometheus metrics", tags=["health"], sync_to_thread=False)
def metrics() -> Response[bytes]:
    """Every metric of this process in the Prometheus text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
