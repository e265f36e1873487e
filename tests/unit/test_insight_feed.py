"""The feed items one analysis makes (no database: the window is built from a labelled fleet)."""

from __future__ import annotations

import uuid

import numpy as np

from config.settings import InsightSettings
from domain.insight_rules import InsightKind
from processes.insights.analysis import SLOTS_PER_DAY
from processes.insights.runner import Window, analyse, build_insights
from simulation.labelled_fleet import Case, FleetSpec, LabelledFleet


def test_one_run_makes_explained_items_of_every_kind() -> None:
    fleet = LabelledFleet(
        FleetSpec(meters=1000, seed=11, regions=1, areas_per_region=4, false_tamper_share=0.01)
    )
    power = fleet.curves(0, fleet.meters)
    ids = [uuid.UUID(int=i + 1) for i in range(fleet.meters)]
    window = Window(
        meters=ids,
        regions=["R"] * fleet.meters,
        areas=fleet.areas,
        region_codes=fleet.regions,
        power=power[:, : 28 * SLOTS_PER_DAY + 8],
        start=fleet.start,
        days=28,
        evidence=fleet.evidence,
    )
    results = analyse(window)
    peak = float(results.region_forecast.mean.max())
    items = build_insights(window, results, {"R": peak}, InsightSettings())
    kinds: dict[InsightKind, list[uuid.UUID | None]] = {}
    for item in items:
        kinds.setdefault(item.kind, []).append(item.meter)
        assert item.evidence and 0 <= item.confidence <= 100
        assert item.id.startswith(item.kind.value + ":")
    index = {meter: i for i, meter in enumerate(ids)}
    thieves = {index[m] for m in kinds[InsightKind.THEFT] if m is not None}
    assert thieves <= set(np.flatnonzero(fleet.truth(Case.THEFT)).tolist())
    stuck = {index[m] for m in kinds[InsightKind.STUCK_METER] if m is not None}
    assert stuck == set(np.flatnonzero(fleet.truth(Case.STUCK)).tolist())
    tampered = {index[m] for m in kinds[InsightKind.TAMPER_EVENTS] if m is not None}
    assert tampered and all(fleet.evidence.tamper_events[i] > 0 for i in tampered)
    assert not tampered & thieves  # a suspicion already names its tamper events
    base = [index[m] for m in kinds.get(InsightKind.HIGH_BASE_LOAD, []) if m is not None]
    assert all(fleet.profiles[i] != 2 for i in base)  # factories run round the clock
    assert kinds[InsightKind.FORECAST_OVERLOAD] == [None]  # the region at its capacity
    quiet = build_insights(window, results, {"R": 10 * peak}, InsightSettings())
    assert InsightKind.FORECAST_OVERLOAD not in {i.kind for i in quiet}
