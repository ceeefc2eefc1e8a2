"""Conformal prediction intervals around an ensemble's forecast, calibrated walk-forward on matured errors.

The method is split conformal on normalised residuals: a row's score is |actual - forecast| / scale,
where the scale is known at the origin: the standard deviation of the last max(21, h) one-step
returns, times sqrt(h). Each fold's calibration set is the score of every row whose label had
matured before the fold's first origin (an expanding window, as the base families' folds); each
level's quantile q of those scores gives each row of the fold the interval forecast +- q x its own
scale. Intervals therefore widen as soon as the market does, while the quantile, which needs
outcomes, follows slowly.

Markets are not exchangeable, and overlapping labels make thousands of scores a handful of
outcomes (252 rows at 12m are one), so the product calibrates with two refinements (`Calibration`):
- weights: a score's weight halves with every year between it and the newest matured one, and the
  quantile is the weighted one with the new origin's own weight 1 placed at +infinity
  (non-exchangeable conformal, Barber, Candes, Ramdas and Tibshirani 2023). With equal weights this
  is MAPIE's `SplitConformalRegressor` quantile, which computes that case.
- a normal prior: a scaled score of a move with the known volatility and no drift is |N(0, 1)|, so
  the quantile is shrunk toward the normal one, z = 1.645 at 90%, as if 1 / (1 - level) outcomes
  (10 at 90%: enough to expect one miss) had shown it, against m = n_eff / h, the outcomes the
  weighted scores hold (n_eff = (sum w)^2 / sum w^2). A week's quantile is almost all data; a
  year's, with a few years of outcomes, leans on the prior.

Settings are few and fixed: the levels, the scale's window rule, the one-year half-life, the prior's
strength, and `min_scores` (a fold with fewer matured scores gets no interval). The coverage table
says how many independent outcomes each coverage figure rests on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import polars as pl
from sklearn.base import BaseEstimator, RegressorMixin

from cbi_assets.ensembles.maturity import matured_counts

LEVELS = (0.8, 0.9)
MIN_SCORES = 50
SHORTEST_VOLATILITY_WINDOW = 21  # a month of sessions (or of bars intraday)
HALF_LIFE_YEARS = 1.0  # a score's weight halves with each year before the newest matured one


@dataclass(frozen=True)
class Calibration:
    """How matured scores become each level's quantile. The default is plain split conformal: every
    score alike, no prior."""

    horizon_rows: int = 1  # rows one label spans: h overlapping scores are about one outcome
    half_life_rows: float | None = None  # None: equal weights
    normal_prior: bool = False  # shrink toward the normal quantile (scores of volatility-scaled moves only)

    @classmethod
    def of(cls, horizon_rows: int, rows_per_year: float) -> Calibration:
        """The product's calibration for a horizon: yearly half-life and the normal prior."""
        return cls(horizon_rows, HALF_LIFE_YEARS * rows_per_year, True)

    def quantiles(self, scores: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
        """Each level's quantile of the matured `scores` (oldest first); NaN where the weights cannot reach it."""
        if self.half_life_rows is None:
            q, weights = conformal_quantiles(scores, levels), np.ones(len(scores))
        else:
            weights = 0.5 ** (np.arange(len(scores))[::-1] / self.half_life_rows)
            q = weighted_quantiles(scores, weights, levels)
        q = np.where(np.isfinite(q), q, np.nan)
        if not self.normal_prior:
            return q
        outcomes = weights.sum() ** 2 / np.square(weights).sum() / self.horizon_rows
        prior = np.array([1 / (1 - v) for v in levels])
        normal = np.array([NormalDist().inv_cdf((1 + v) / 2) for v in levels])
        return (outcomes * q + prior * normal) / (outcomes + prior)


def level_name(level: float) -> str:
    """0.9 -> "90", 0.975 -> "97_5": the suffix of a level's columns."""
    return f"{level * 100:g}".replace(".", "_")


def check_levels(levels, min_scores: int) -> tuple[float, ...]:
    """The levels as a sorted tuple, each in (0, 1) and reachable with `min_scores` calibration scores."""
    levels = tuple(sorted(float(v) for v in levels))
    if not levels or any(not 0 < v < 1 for v in levels) or len(set(levels)) != len(levels):
        raise ValueError(
            f"interval levels {list(levels)}: give distinct coverage levels strictly between 0 and 1, e.g. [0.8, 0.9]"
        )
    # The corrected quantile ceil(level (n + 1)) / n must not pass 1.
    needed = math.ceil(levels[-1] / (1 - levels[-1]))
    if min_scores < needed:
        raise ValueError(f"min_scores={min_scores} cannot reach the {levels[-1]:.0%} level; use at least {needed}")
    return levels


def volatility_scale(returns: np.ndarray, horizon_rows: int) -> np.ndarray:
    """The typical size of a move over the horizon, known at each row: the standard deviation of the
    one-step returns of the last max(21, h) rows (including the row's own, known at its close), times
    sqrt(h). A 12-month scale should not triple after one wild week, so the window grows with the
    horizon. NaN until half a window has passed, and where the market did not move at all."""
    window = max(SHORTEST_VOLATILITY_WINDOW, horizon_rows)
    std = pl.Series(returns, dtype=pl.Float64).rolling_std(window, min_samples=window // 2).to_numpy()
    scale = std * math.sqrt(horizon_rows)
    return np.where(scale > 0, scale, np.nan)


class GivenForecast(RegressorMixin, BaseEstimator):
    """A prefitted "regressor" whose prediction is its one input: MAPIE calibrates a forecast made elsewhere."""

    def __init__(self):
        self.n_features_in_ = 1  # marks it as fitted for MAPIE's check

    def fit(self, x, y=None):
        return self

    def predict(self, x):
        return np.asarray(x, dtype=np.float64)[:, 0]


def conformal_quantiles(scores: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """Each level's conformal quantile of absolute scores (MAPIE's finite-sample correction)."""
    from mapie.regression import SplitConformalRegressor

    scores = np.asarray(scores, dtype=np.float64)
    calibrated = SplitConformalRegressor(GivenForecast(), confidence_level=list(levels), prefit=True).conformalize(
        np.zeros((len(scores), 1)), scores
    )
    _, intervals = calibrated.predict_interval(np.zeros((1, 1)))
    return intervals[0, 1, :]  # the upper bound around a forecast of 0 is the quantile


def weighted_quantiles(scores: np.ndarray, weights: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """Each level's quantile of the scores weighted by `weights`, with a new origin's weight 1 at +inf:
    the smallest score whose cumulative weight reaches the level of the whole; +inf if none does."""
    order = np.argsort(scores, kind="stable")
    ranked = np.asarray(scores, dtype=np.float64)[order]
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64)[order]) / (np.sum(weights) + 1.0)
    # A level met exactly (k / (n + 1) with equal weights) counts as reached, as in MAPIE.
    at = np.searchsorted(cumulative, np.asarray(levels) - 1e-12, side="left")
    return np.where(at < len(ranked), ranked[np.minimum(at, len(ranked) - 1)], np.inf)


def scores_of(forecast: np.ndarray, actual: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Normalised absolute residuals: NaN where the forecast or the scale is unknown."""
    return np.abs(actual - forecast) / scale


def walk_forward_intervals(
    forecast: np.ndarray,
    actual: np.ndarray,
    scale: np.ndarray,
    folds: np.ndarray,
    label_end,
    origins,
    levels: tuple[float, ...] = LEVELS,
    min_scores: int = MIN_SCORES,
    calibration: Calibration = Calibration(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower, upper) of shape (rows, levels) and each row's quantile q (rows, levels), NaN where a fold
    has fewer than `min_scores` matured scores or a row has no forecast or scale.

    Rows are in time order; rows where `forecast` is NaN (not forecast) neither get nor give scores.
    The calibration of fold k uses only scores of rows whose labels ended before its first origin.
    """
    levels = check_levels(levels, min_scores)
    scores = scores_of(forecast, actual, scale)
    counts = matured_counts(label_end, origins)
    q = np.full((len(forecast), len(levels)), np.nan)
    first = np.flatnonzero(np.r_[True, folds[1:] != folds[:-1]])
    for start, end in zip(first, np.r_[first[1:], len(folds)], strict=True):
        history = scores[: counts[start]]
        history = history[np.isfinite(history)]
        if len(history) >= min_scores:
            q[start:end] = calibration.quantiles(history, levels)
    half = q * scale[:, None]
    return forecast[:, None] - half, forecast[:, None] + half, q


def interval_at(
    forecast: float,
    scale: float,
    history: pl.DataFrame,
    origin,
    levels: tuple[float, ...] = LEVELS,
    min_scores: int = MIN_SCORES,
    calibration: Calibration = Calibration(),
) -> dict[float, tuple[float, float]] | None:
    """The conformal interval (return units) at each level for one new origin.

    `history` holds stored rows in time order with `label_end` and `score` (the normalised residual;
    the forecasts table of the ensemble asset); only rows whose label ended before `origin` calibrate.
    None when fewer than `min_scores` have matured or the scale is unknown.
    """
    levels = check_levels(levels, min_scores)
    matured = history.filter((pl.col("label_end") < origin) & pl.col("score").is_finite())["score"].to_numpy()
    if len(matured) < min_scores or not np.isfinite(scale) or scale <= 0:
        return None
    q = calibration.quantiles(matured, levels)
    if not np.isfinite(q).all():
        return None
    return {level: (forecast - q[i] * scale, forecast + q[i] * scale) for i, level in enumerate(levels)}


# --- Coverage --------------------------------------------------------------------------------------


def coverage(
    frame: pl.DataFrame,
    intervals: dict[tuple[str, float], tuple[str, str]],
    horizon_rows: int,
    scopes: tuple[str, ...] = ("regime", "state"),
) -> pl.DataFrame:
    """Empirical coverage of each interval overall and per group of each scope column.

    `intervals` maps (method, nominal level) to its (lower, upper) return columns in `frame`, which
    holds `actual`. Only rows with that interval count. Columns: method, level, scope, group, rows,
    coverage, mean_width (return units) and outcomes, the rows over the horizon: about how many
    non-overlapping outcomes the coverage rests on.
    """
    parts = []
    for (method, level), (lower, upper) in intervals.items():
        have = frame.filter(pl.col(lower).is_finite() & pl.col(upper).is_finite()).with_columns(
            ((pl.col("actual") >= pl.col(lower)) & (pl.col("actual") <= pl.col(upper))).alias("_in"),
            (pl.col(upper) - pl.col(lower)).alias("_width"),
            pl.lit("all").alias("_all"),
        )
        for scope, column in (("overall", "_all"), *((s, s) for s in scopes)):
            parts.append(
                have.group_by(pl.col(column).cast(pl.String).alias("group"))
                .agg(
                    pl.len().alias("rows"),
                    pl.col("_in").mean().alias("coverage"),
                    pl.col("_width").mean().alias("mean_width"),
                )
                .with_columns(
                    pl.lit(method).alias("method"), pl.lit(level).alias("level"), pl.lit(scope).alias("scope")
                )
            )
    schema = {
        "method": pl.String,
        "level": pl.Float64,
        "scope": pl.String,
        "group": pl.String,
        "rows": pl.Int64,
        "coverage": pl.Float64,
        "mean_width": pl.Float64,
        "outcomes": pl.Float64,
    }
    if not parts:
        return pl.DataFrame(schema=schema)
    scope_order = {"overall": 0, **{s: i + 1 for i, s in enumerate(scopes)}}
    return (
        pl.concat(parts, how="diagonal_relaxed")
        .with_columns((pl.col("rows") / horizon_rows).alias("outcomes"), pl.col("rows").cast(pl.Int64))
        .select(pl.col(c).cast(t) for c, t in schema.items())
        .sort(pl.col("method"), pl.col("level"), pl.col("scope").replace_strict(scope_order), pl.col("group"))
    )
