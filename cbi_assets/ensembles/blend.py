"""The regime-aware blend: each family weighted by its recent accuracy in the market's current state.

For the row at origin t in regime state S, a family's weight is the inverse of its mean squared
error over the last `window` rows in state S whose labels had matured by t; with fewer than
`min_rows` such rows, over the last `window` matured rows of any state. Weights sum to one. No
weight is fitted on a row that had not matured, so the blend is as honest as its members.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cbi_assets.ensembles.maturity import matured_counts


@dataclass(frozen=True)
class BlendPlan:
    window: int = 252  # matured rows whose errors set the weights (a year of daily origins)
    min_rows: int = 30  # fewer matured rows in the current state: fall back to every state

    def __post_init__(self) -> None:
        if self.window < 1 or self.min_rows < 1:
            raise ValueError(f"BlendPlan: window ({self.window}) and min_rows ({self.min_rows}) must be at least 1 row")


def blend_weights(
    forecasts: np.ndarray, actual: np.ndarray, states: np.ndarray, label_end, origins, plan: BlendPlan = BlendPlan()
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, families) weights for each origin, and whether each row fell back to all states.

    Rows with fewer than `plan.min_rows` matured rows of any state get NaN weights. `states` is any
    label per row (its data-driven regime state); rows are in time order.
    """
    n, m = forecasts.shape
    squared = (forecasts - actual[:, None]) ** 2
    counts = matured_counts(label_end, origins)  # rows [0, counts[t]) had matured by origin t
    # Sums over any run of rows come from cumulative sums, per state and over all rows.
    total = np.vstack([np.zeros(m), np.cumsum(squared, axis=0)])
    sums = np.full((n, m), np.nan)
    fell_back = np.zeros(n, dtype=bool)
    for state in np.unique(states):
        positions = np.flatnonzero(states == state)
        cumulative = np.vstack([np.zeros(m), np.cumsum(squared[positions], axis=0)])
        here = positions  # rows of this state, each looking back at its matured rows of the same state
        k = np.searchsorted(positions, counts[here], side="left")  # matured rows in this state
        lo = np.maximum(0, k - plan.window)
        own = k >= plan.min_rows
        sums[here[own]] = (cumulative[k[own]] - cumulative[lo[own]]) / (k[own] - lo[own])[:, None]
        fell_back[here[~own]] = True
    back = np.flatnonzero(fell_back)
    c = counts[back]
    lo = np.maximum(0, c - plan.window)
    enough = c >= plan.min_rows
    sums[back[enough]] = (total[c[enough]] - total[lo[enough]]) / (c[enough] - lo[enough])[:, None]
    # A family that was exactly right has infinite precision; the floor keeps its weight finite.
    precision = 1.0 / np.maximum(sums, 1e-18)
    return precision / precision.sum(axis=1, keepdims=True), fell_back


def blend(forecasts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted mean forecast of each row (NaN where the weights are)."""
    return np.sum(forecasts * weights, axis=1)
