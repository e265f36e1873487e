"""Next-24-hour forecasts at 15-minute resolution with prediction intervals, and their error.

Per meter (all meters at once, numpy): the mean of the same slot of the week over the last
weeks, scaled by how the last day compared with that profile (a damped level correction), with
an interval from the meter's own recent relative errors of the same method. Per region (a few
series): Holt-Winters exponential smoothing from statsmodels on the region's summed load, with
the interval from its in-sample residuals. docs/insights.md says why the split.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from processes.insights.analysis import SLOTS_PER_DAY, Floats, quiet

HORIZON = SLOTS_PER_DAY
WEEK = 7 * SLOTS_PER_DAY
LEVEL_DAMPING = 0.5
"""Exponent of the last day's level ratio applied to the profile (0: none, 1: all of it)."""
COVERAGE = 0.9
"""Nominal coverage of the prediction intervals."""
HOLT_WINTERS_BUDGET = 20.0
"""Seconds of Holt-Winters fitting a run may spend on region forecasts."""


@dataclass(frozen=True, slots=True)
class Forecast:
    """Forecast power (W) for the next ``HORIZON`` slots with lower and upper bounds."""

    mean: Floats
    lower: Floats
    upper: Floats


def _profile(power: Floats, end: int, weeks: int) -> Floats:
    """Mean of the same slot of the week in the ``weeks`` weeks before ``end``, next day's slots."""
    rows = [
        power[:, end - k * WEEK : end - k * WEEK + HORIZON]
        for k in range(1, weeks + 1)
        if end - k * WEEK >= 0
    ]
    if not rows:
        raise ValueError("a forecast needs at least one week of history")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean: Floats = np.nanmean(np.stack(rows), axis=0)
    return mean


def _level(power: Floats, end: int, weeks: int) -> Floats:
    """How the last day before ``end`` compared with its own profile (damped ratio, mx1)."""
    recent = np.nansum(power[:, end - HORIZON : end], axis=1)
    usual = np.nansum(_profile(power, end - HORIZON, weeks), axis=1)
    ratio = np.where(usual > 0, recent / np.where(usual > 0, usual, 1), 1.0)
    return np.clip(ratio, 0.5, 2.0)[:, None] ** LEVEL_DAMPING


@quiet
def forecast_meters(power: Floats, weeks: int = 4, end: int | None = None) -> Forecast:
    """Forecast the ``HORIZON`` slots after ``end`` (default: after the matrix) for every meter."""
    end = power.shape[1] if end is None else end
    mean = _profile(power, end, weeks) * _level(power, end, weeks)
    mean = np.nan_to_num(mean, nan=0.0)
    # Relative errors of the same method over the previous days give each meter's interval.
    errors = []
    for back in range(1, 4):
        past_end = end - back * HORIZON
        if past_end - HORIZON - WEEK < 0:
            break
        fitted = _profile(power, past_end, weeks) * _level(power, past_end, weeks)
        actual = power[:, past_end : past_end + HORIZON]
        scale = np.nanmean(fitted, axis=1, keepdims=True) * 0.05 + fitted
        errors.append((actual - fitted) / np.where(scale > 0, scale, 1))
    if errors:
        rel = np.concatenate(errors, axis=1)
        tail = (1 - COVERAGE) / 2
        low, high = np.nanquantile(rel, [tail, 1 - tail], axis=1)
    else:
        low, high = np.full(power.shape[0], -0.5), np.full(power.shape[0], 0.5)
    low = np.nan_to_num(low, nan=-0.5)[:, None]
    high = np.nan_to_num(high, nan=0.5)[:, None]
    scale = np.mean(mean, axis=1, keepdims=True) * 0.05 + mean
    return Forecast(
        mean=mean,
        lower=np.maximum(mean + low * scale, 0.0),
        upper=np.maximum(mean + high * scale, mean),
    )


def forecast_series(series: Floats, seasonal: int = SLOTS_PER_DAY) -> Forecast:
    """Holt-Winters forecast of one aggregate load series for the next ``HORIZON`` slots.

    The weekly shape is taken out first (each slot of the week divided by its mean over the
    window), the smoothing model follows level and the daily season of what remains, and the
    weekly shape is put back: a daily seasonal model alone would forecast a Monday like a Sunday.
    """
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    values = np.nan_to_num(np.asarray(series, dtype=np.float64), nan=0.0)
    n = len(values)
    if n >= 2 * WEEK:
        week_slot = np.arange(n) % WEEK
        shape = np.bincount(week_slot, values, WEEK) / np.maximum(np.bincount(week_slot), 1)
        shape = shape / max(float(shape.mean()), 1e-9)
        shape = np.where(shape > 0, shape, 1.0)
        adjusted = values / shape[week_slot]
        future_shape = shape[np.arange(n, n + HORIZON) % WEEK]
    else:
        adjusted, future_shape = values, np.ones(HORIZON)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ExponentialSmoothing(
            adjusted,
            trend=None,
            seasonal="add",
            seasonal_periods=seasonal,
            initialization_method="heuristic",
        ).fit()
    ahead = np.asarray(fit.forecast(HORIZON)) * future_shape
    residuals = (adjusted - np.asarray(fit.fittedvalues))[-WEEK:] * (
        shape[week_slot][-WEEK:] if n >= 2 * WEEK else 1.0
    )
    tail = (1 - COVERAGE) / 2
    low, high = np.quantile(residuals, [tail, 1 - tail])
    return Forecast(
        mean=np.maximum(ahead, 0.0),
        lower=np.maximum(ahead + low, 0.0),
        upper=np.maximum(ahead + high, 0.0),
    )


def seasonal_naive(power: Floats, end: int, period: int = WEEK) -> Floats:
    """The seasonal-naive forecast: the same slots one ``period`` earlier."""
    return power[:, end - period : end - period + HORIZON]


def mase(forecast: Floats, actual: Floats, history: Floats, period: int = SLOTS_PER_DAY) -> Floats:
    """Mean absolute scaled error per row: forecast MAE over the in-sample seasonal-naive MAE."""
    scale = np.nanmean(np.abs(history[:, period:] - history[:, :-period]), axis=1)
    mae = np.nanmean(np.abs(forecast - actual), axis=1)
    return np.asarray(mae / np.where(scale > 0, scale, np.nan))


@quiet
def forecast_regions(
    series: Floats, budget_seconds: float = HOLT_WINTERS_BUDGET
) -> tuple[Forecast, list[str]]:
    """Forecast each region's load (rows of ``series``) with the better of two models.

    Candidates: the profile method (as for meters) and Holt-Winters (``forecast_series``). Each
    region's model is the one with the lower error when both forecast the last known day from
    the days before it (a one-day backtest). Once the Holt-Winters fits have taken
    ``budget_seconds``, the remaining regions keep the profile method (many regions must not
    stretch a run).
    """
    profile = forecast_meters(series)
    means, lowers, uppers, chosen = [], [], [], []
    end = series.shape[1] - HORIZON
    deadline = time.monotonic() + budget_seconds
    for r in range(series.shape[0]):
        actual = series[r, end:]
        if time.monotonic() > deadline:
            means.append(profile.mean[r])
            lowers.append(profile.lower[r])
            uppers.append(profile.upper[r])
            chosen.append("weekly-profile")
            continue
        try:
            backtest = forecast_series(series[r, :end]).mean
            holt_better = bool(
                np.mean(np.abs(backtest - actual))
                < np.mean(np.abs(forecast_meters(series[r : r + 1], end=end).mean[0] - actual))
            )
        except (ValueError, np.linalg.LinAlgError):
            holt_better = False
        if holt_better:
            f = forecast_series(series[r])
            means.append(f.mean)
            lowers.append(f.lower)
            uppers.append(f.upper)
            chosen.append("holt-winters")
        else:
            means.append(profile.mean[r])
            lowers.append(profile.lower[r])
            uppers.append(profile.upper[r])
            chosen.append("weekly-profile")
    return Forecast(mean=np.stack(means), lower=np.stack(lowers), upper=np.stack(uppers)), chosen
