"""Prometheus scrape endpoint (aggregating worker processes when `hes up` started them)."""

from __future__ import annotations

import os

from litestar import Response, get
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


@get("/metrics", summary="Prometheus metrics", tags=["health"], sync_to_thread=False)
def metrics() -> Response[bytes]:
    """Every metric of this process (and its worker children) in the Prometheus text format."""
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)
