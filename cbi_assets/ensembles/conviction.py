"""Conviction and confidence of each forecast, two separate numbers in [0, 1].

Conviction says how strongly the members agree on a direction; confidence how tight the forecast is.
The members are the families that forecast a direction (the random walk, always zero, is left out),
each counted once.

conviction = agreement x strength, where
    agreement = the share of members whose forecast has the ensemble forecast's sign (0 if the
                ensemble forecasts exactly no move), and
    strength  = |m| / (|m| + s), m the members' mean forecast and s their standard deviation
                (population): 1 when all members say the same, 1/2 when the mean is one spread from 0.

confidence = precision x consensus, where
    precision = t / (t + w), w the half-width of the widest conformal interval (90% by default) and t
                the typical move of the horizon: the mean absolute forward return of every row matured
                by the origin (the random walk's error so far). 1/2 when the half-width equals it.
    consensus = t / (t + s), s the members' standard deviation as above.
So a forecast loses confidence when its interval is wide for the horizon (a stressed market, or a
model that has been wrong) or when its members disagree.
"""

from __future__ import annotations

import numpy as np

from cbi_assets.ensembles.maturity import matured_counts


def conviction(members: np.ndarray, ensemble: np.ndarray) -> np.ndarray:
    """(rows,) conviction of each row from (rows, members) directional forecasts and the ensemble's."""
    direction = np.sign(ensemble)
    agreement = np.mean(np.sign(members) == direction[:, None], axis=1)
    agreement = np.where(direction == 0, 0.0, agreement)
    mean, spread = np.abs(members.mean(axis=1)), members.std(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        strength = np.where(mean + spread > 0, mean / (mean + spread), 0.0)
    return np.where(np.isfinite(ensemble), agreement * strength, np.nan)


def typical_move(actual: np.ndarray, label_end, origins) -> np.ndarray:
    """Mean absolute forward return of the rows matured by each origin (NaN before the first)."""
    counts = matured_counts(label_end, origins)
    cumulative = np.r_[0.0, np.cumsum(np.abs(actual))]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, cumulative[counts] / np.maximum(counts, 1), np.nan)


def confidence(half_width: np.ndarray, spread: np.ndarray, typical: np.ndarray) -> np.ndarray:
    """(rows,) confidence from the interval's half-width, the members' spread and the typical move
    (NaN where the interval or the typical move is unknown)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (typical / (typical + half_width)) * (typical / (typical + spread))
