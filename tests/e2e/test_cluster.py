"""HES scaled out on one machine: a 3-server NATS cluster, worker processes sharing partitions
through leases, two API replicas on one port. A NATS server and a worker are killed mid-run;
every reading an API acknowledged is stored exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from rich.console import Console

from benchmarks.cluster import ClusterRig, run_cluster
from config.settings import Settings
from tests.services import Services

pytestmark = pytest.mark.e2e


def test_killing_a_nats_server_and_a_worker_loses_and_doubles_nothing(
    services: Services, tmp_path: Path
) -> None:
    settings = Settings.of(database_url=services.database_url, reading_partitions=8)
    rig = ClusterRig(settings, workers=2, apis=2, meters=200, ack_wait=5.0, root=tmp_path)
    figures = asyncio.run(
        run_cluster(
            rig,
            Console(quiet=True),
            seconds=12.0,
            concurrency=4,
            items=100,
            settle=4.0,
            catch_up_within=90.0,
        )
    )

    assert figures.killed == ["NATS server hes-n0", "worker 0"]
    assert figures.acknowledged > 0
    # Every acknowledged reading stored, and counted once by the status and the aggregates.
    assert (
        figures.acknowledged
        == figures.stored
        == figures.counted_by_status
        == figures.counted_by_windows
    )
    assert figures.stream_replicas == 3
    after = figures.phases[-1]
    assert after.name == "after fail-over" and after.acknowledged_per_s > 0
    # Both API replicas behind the one port served requests.
    assert len(figures.api_cpu_seconds) == 2 and min(figures.api_cpu_seconds) > 0.3
