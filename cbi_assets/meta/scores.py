"""How the meta layer scores a forecast: the models' evaluation metrics, with the MSE beside the
random walk's (forecast 0) on the same rows."""

from __future__ import annotations

import math

import numpy as np

from cbi_assets.models.evaluation import metrics

# What the few-shot and transfer tables show, beside the random walk.
SHOWN = ("mse", "mse_vs_rw", "mase", "directional_accuracy")


def scores(
    actual: np.ndarray,
    forecast: np.ndarray,
    price: np.ndarray,
    forward_price: np.ndarray,
    *,
    horizon: int,
    periods_per_year: float,
    cost_bps: float,
) -> dict[str, float]:
    """The evaluation metrics of some rows (cbi_assets.models.evaluation.metrics), plus `mse` and
    `mse_vs_rw`: the MSE over the random walk's."""
    found = metrics(
        actual, forecast, price, forward_price, horizon=horizon, periods_per_year=periods_per_year, cost_bps=cost_bps
    )
    walk = float(np.mean(actual**2)) if len(actual) else math.nan
    mse = float(np.mean((forecast - actual) ** 2)) if len(actual) else math.nan
    return {**found, "mse": mse, "mse_vs_rw": mse / walk if walk > 0 else math.nan}
