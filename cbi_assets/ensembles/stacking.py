"""Stacking: a stacker forecasts the return from the families' forecasts and the regime state, refitted
walk-forward so that each fold is forecast by a stacker that saw only matured earlier rows.

Two stackers, with settings fixed here rather than tuned on the test folds:
- `stack_ridge`: per-state non-negative weights of the families, mixed by the state probabilities:
  forecast = sum_s p_s sum_j w_js f_j with every w_js >= 0 and no intercept (Breiman's stacked
  regression: unconstrained weights of highly correlated forecasts swing to large opposite signs, and
  an intercept would carry the training window's drift into the future). The ridge penalty is chosen
  by a purged time-series cross-validation within the matured rows (a generalised cross-validation
  would count overlapping labels as independent and pick too little penalty).
- `stack_lightgbm`: a small LightGBM on the forecasts and state probabilities, stopped early on the
  last fifth of the matured rows with the label overlap purged, like the base tree families.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from cbi_assets.ensembles.maturity import matured_counts
from cbi_assets.models.registry import validation_split

PENALTIES = np.logspace(-4, 0, 5)  # ridge penalty per row, on returns divided by their standard deviation
CV_SPLITS = 3
LIGHTGBM_ROUNDS, LIGHTGBM_PATIENCE = 500, 30


class Stacked(Protocol):
    def predict(self, forecasts: np.ndarray, states: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Stacker:
    name: str
    fit: Callable[..., Stacked]  # (forecasts, states, y, horizon, threads) -> Stacked
    description: str


def interactions(forecasts: np.ndarray, states: np.ndarray) -> np.ndarray:
    """(rows, families x states): each forecast times each state probability, state-major."""
    return (states[:, :, None] * forecasts[:, None, :]).reshape(len(forecasts), -1)


@dataclass(frozen=True)
class StateRidge:
    weights: np.ndarray  # (states, families), non-negative
    penalty: float

    def predict(self, forecasts: np.ndarray, states: np.ndarray) -> np.ndarray:
        return interactions(forecasts, states) @ self.weights.ravel()

    def family_weights(self, state: int) -> np.ndarray:
        return self.weights[state]


def _ridge(x: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    """argmin |x w - y|^2 + penalty n |w|^2 over w >= 0, as non-negative least squares on the Cholesky
    factor of the penalised Gram matrix: the same objective up to a constant, in (columns x columns)
    whatever the rows (scikit-learn's positive ridge iterates L-BFGS over every row, 100x slower here)."""
    from scipy.linalg import cholesky, solve_triangular
    from scipy.optimize import nnls

    gram = x.T @ x + penalty * len(y) * np.eye(x.shape[1])
    upper = cholesky(gram)  # gram = upper.T @ upper
    weights, _ = nnls(upper, solve_triangular(upper, x.T @ y, trans="T"))
    return weights


def fit_state_ridge(
    forecasts: np.ndarray, states: np.ndarray, y: np.ndarray, horizon: int, threads: int | None = None
) -> StateRidge:
    """Non-negative per-state weights; the penalty is the one with the least error on purged
    time-series splits (each validation block `horizon` rows after its training rows)."""
    from sklearn.model_selection import TimeSeriesSplit

    unit = float(np.std(y)) or 1.0
    x, target = interactions(forecasts, states) / unit, y / unit
    splits = CV_SPLITS if len(y) > (CV_SPLITS + 1) * (horizon + 10) else 0
    errors = np.zeros(len(PENALTIES))
    if splits:
        for train, valid in TimeSeriesSplit(n_splits=splits, gap=horizon).split(x):
            for i, penalty in enumerate(PENALTIES):
                w = _ridge(x[train], target[train], penalty)
                errors[i] += np.mean((x[valid] @ w - target[valid]) ** 2)
    penalty = float(PENALTIES[int(np.argmin(errors))]) if splits else float(PENALTIES[-1])
    weights = _ridge(x, target, penalty)
    return StateRidge(weights.reshape(states.shape[1], forecasts.shape[1]), penalty)


@dataclass(frozen=True)
class StateTrees:
    booster: object

    def predict(self, forecasts: np.ndarray, states: np.ndarray) -> np.ndarray:
        return self.booster.predict(np.column_stack([forecasts, states]))


def fit_lightgbm(
    forecasts: np.ndarray, states: np.ndarray, y: np.ndarray, horizon: int, threads: int | None = None
) -> StateTrees:
    import lightgbm as lgb

    x = np.column_stack([forecasts, states])
    # Shallow and slow-learning: a few thousand rows of correlated forecasts hold little beyond a
    # weighted mean, so the trees must not chase noise.
    params = {
        "objective": "regression",
        "learning_rate": 0.03,
        "num_leaves": 8,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "seed": 7,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
        "num_threads": threads or 1,
    }
    fit, valid = validation_split(len(y), horizon, 0.2)
    data = lgb.Dataset(x[fit], y[fit], free_raw_data=False)
    kwargs = {}
    if valid.start < len(y):
        kwargs = {
            "valid_sets": [lgb.Dataset(x[valid], y[valid], reference=data)],
            "callbacks": [lgb.early_stopping(LIGHTGBM_PATIENCE, verbose=False)],
        }
    return StateTrees(lgb.train(params, data, num_boost_round=LIGHTGBM_ROUNDS, **kwargs))


STACKERS = {
    "stack_ridge": Stacker(
        "stack_ridge", fit_state_ridge, "non-negative ridge weights per regime state, mixed by the state probabilities"
    ),
    "stack_lightgbm": Stacker("stack_lightgbm", fit_lightgbm, "LightGBM on the forecasts and state probabilities"),
}


def fold_starts(folds: np.ndarray) -> dict[int, int]:
    """The first row of each fold (rows in time order, folds consecutive)."""
    first = np.flatnonzero(np.r_[True, folds[1:] != folds[:-1]])
    starts = {int(folds[i]): int(i) for i in first}
    if len(starts) != len(first):
        raise ValueError("the rows of a fold are not consecutive; sort the out-of-fold rows by time")
    return starts


def trainable_folds(folds: np.ndarray, label_end, origins, min_rows: int) -> list[int]:
    """Folds whose first origin has at least `min_rows` matured rows before it to learn from.

    Fold 0 never has any (its labels end inside or after it), nor do the first folds of long horizons.
    """
    starts = fold_starts(folds)
    counts = matured_counts(label_end, origins)
    return [k for k, i in starts.items() if counts[i] >= max(min_rows, 1)]


def walk_stacked(
    stacker: Stacker,
    forecasts: np.ndarray,
    states: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    label_end,
    origins,
    evaluated: list[int],
    horizon: int,
    *,
    max_rows: int | None = None,
    threads: int | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> np.ndarray:
    """Out-of-fold forecasts of a stacker: NaN outside the `evaluated` folds.

    For fold k the stacker is fitted on the rows matured before the fold's first origin (at most the
    last `max_rows` of them), then forecasts every row of fold k. Rows of fold k itself, and any
    earlier row whose label reaches into it, never enter its fit.
    """
    out = np.full(len(y), np.nan)
    starts = fold_starts(folds)
    counts = matured_counts(label_end, origins)
    for k in evaluated:
        rows = folds == k
        matured = int(counts[starts[k]])
        train = slice(max(0, matured - max_rows) if max_rows else 0, matured)
        model = stacker.fit(forecasts[train], states[train], y[train], horizon, threads)
        out[rows] = model.predict(forecasts[rows], states[rows])
        log(f"{stacker.name} fold {k}: fitted on {matured - train.start:,} matured rows, forecasts {int(rows.sum()):,}")
    return out
