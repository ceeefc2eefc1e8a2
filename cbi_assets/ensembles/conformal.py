"""Conformal prediction intervals around a forecast, calibrated walk-forward on matured errors, made to
hold their coverage when volatility and the market's state change.

The method is split conformal on normalised residuals: a row's score is |actual - forecast| / scale,
where the scale is a volatility forecast for the horizon made at the origin (`volatility_scale`): the
standard deviation of the last max(21, h) one-step returns, times sqrt(h). Each fold's
calibration set is the score of every row whose label had matured before the fold's first origin (an
expanding window, as the base families' folds); each level's quantile q of those scores gives each
row the interval forecast +- q x its own scale. Intervals therefore widen as soon as the market
does, while the quantile, which needs outcomes, follows slowly.

Markets are not exchangeable, and overlapping labels make thousands of scores a handful of
outcomes (252 rows at 12m are one), so the product calibrates with three refinements (`Calibration`):
- weights: a score's weight halves with every year between it and the newest matured one, and the
  quantile is the weighted one with the new origin's own weight 1 placed at +infinity
  (non-exchangeable conformal, Barber, Candes, Ramdas and Tibshirani 2023). With equal weights this
  is MAPIE's `SplitConformalRegressor` quantile, which computes that case.
- a normal prior: a scaled score of a move with the known volatility and no drift is |N(0, 1)|, so
  the quantile is shrunk toward the normal one, z = 1.645 at 90%, as if 1 / (1 - level) outcomes
  (10 at 90%: enough to expect one miss) had shown it, against m = n_eff / h, the outcomes the
  weighted scores hold (n_eff = (sum w)^2 / sum w^2). A week's quantile is almost all data; a
  year's, with a few years of outcomes, leans on the prior.
- an adaptive level (adaptive conformal inference, Gibbs and Candes 2021, with the horizon's delay):
  each row's level moves by `ADAPT_RATE` per outcome, up after a miss and down after a hit, counting
  only the rows whose labels had matured before its origin (h rows are one outcome), each miss's
  pull halving every year. A run of misses the scale did not foresee (a trend, a new regime) widens
  the next bands without waiting for the next fold's quantile, and the level comes back once the
  market calms.

The data-driven regime state is not a fourth condition: the scores are already divided by the
volatility the states mostly differ in, and splitting a year's horizon, a handful of outcomes, by
state leaves each too few to calibrate on.

Settings are few and fixed: the levels, the scale's window rule, the one-year half-life, the prior's
strength, the adaptation rate, and `min_scores` (a fold with fewer matured scores gets no
interval). The coverage table says how many independent outcomes each coverage figure rests on.
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
HALF_LIFE_YEARS = 1.0  # a score's weight, and a miss's pull on the level, halve with each year
NORMAL = NormalDist()
ADAPT_RATE = 0.02  # the level's move per outcome that missed (x (1 - level)) or hit (x level)
LEVEL_RANGE = (0.5, 0.99)  # where the adapted level stays: never a coin toss, never unbounded


@dataclass(frozen=True)
class Calibration:
    """How matured scores become each level's quantile. The default is plain split conformal: every
    score alike, no prior."""

    horizon_rows: int = 1  # rows one label spans: h overlapping scores are about one outcome
    half_life_rows: float | None = None  # None: equal weights
    normal_prior: bool = False  # shrink toward the normal quantile (scores of volatility-scaled moves only)
    adapt_rate: float = 0.0  # the level's move per matured outcome (0: the nominal level throughout)

    @classmethod
    def of(cls, horizon_rows: int, rows_per_year: float) -> Calibration:
        """The product's calibration for a horizon: yearly half-life, the normal prior and the adaptive level."""
        return cls(horizon_rows, HALF_LIFE_YEARS * rows_per_year, True, ADAPT_RATE)

    @property
    def memory(self) -> float:
        """How much of the misses so far each new matured row keeps: they halve with every half-life, so the
        level follows recent misses and comes back once the market calms (plain ACI would remember a crisis's
        misses for a decade, paying them back by covering too much)."""
        return 0.5 ** (1 / self.half_life_rows) if self.half_life_rows else 1.0

    def weights(self, count: int) -> np.ndarray:
        if self.half_life_rows is None:
            return np.ones(count)
        return 0.5 ** (np.arange(count)[::-1] / self.half_life_rows)

    def quantiles(self, scores: np.ndarray, levels) -> np.ndarray:
        """Each level's quantile of the matured `scores` (oldest first); NaN where the weights cannot reach it."""
        if self.half_life_rows is None and not self.adapt_rate:
            levels = tuple(float(v) for v in np.atleast_1d(levels))
            return self._shrunk(
                conformal_quantiles(scores, levels), np.asarray(levels), len(scores) / self.horizon_rows
            )
        return self.quantile_function(scores)(np.asarray(levels, dtype=np.float64))

    def quantile_function(self, scores: np.ndarray) -> Quantiles:
        """The quantile at any levels of one calibration set, sorted once: a walk's adapted levels change every
        row while a fold's scores stay the same."""
        weights = self.weights(len(scores))
        ranked, cumulative = _ranked(scores, weights)
        outcomes = weights.sum() ** 2 / np.square(weights).sum() / self.horizon_rows
        return Quantiles(self, ranked, cumulative, outcomes)

    def _shrunk(self, q: np.ndarray, levels: np.ndarray, outcomes: float) -> np.ndarray:
        q = np.where(np.isfinite(q), q, np.nan)
        if not self.normal_prior:
            return q
        prior = 1 / (1 - levels)
        normal = np.array([NORMAL.inv_cdf((1 + v) / 2) for v in levels])
        return (outcomes * q + prior * normal) / (outcomes + prior)

    def adapted(self, levels: np.ndarray, misses: np.ndarray, top: float) -> np.ndarray:
        """Each level moved by the matured outcomes so far: `misses` is the sum over matured rows of (missed - (1 -
        level)) per level; h rows are one outcome. Kept within LEVEL_RANGE and below `top`, the highest level
        the calibration scores reach (`Quantiles.top`)."""
        if not self.adapt_rate:
            return levels
        moved = levels + self.adapt_rate * misses / self.horizon_rows
        return np.clip(moved, LEVEL_RANGE[0], min(LEVEL_RANGE[1], top - 1e-9))


@dataclass(frozen=True)
class Quantiles:
    """One calibration set's quantiles at any levels (`Calibration.quantile_function`)."""

    calibration: Calibration
    ranked: np.ndarray  # the scores, sorted
    cumulative: np.ndarray  # their cumulative weight over the whole plus the new origin's 1
    outcomes: float

    @property
    def top(self) -> float:
        """The highest level these scores reach with a finite quantile."""
        return float(self.cumulative[-1]) if len(self.cumulative) else 0.0

    def __call__(self, levels: np.ndarray) -> np.ndarray:
        q = _lookup(self.ranked, self.cumulative, levels)
        return self.calibration._shrunk(q, levels, self.outcomes)


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
    horizon. NaN until half a window has passed, and where the market did not move at all.

    (An EWMA with a GARCH(1,1) term structure was measured against it on ZL's walk-forward years,
    benchmarks/intervals.py: it over-covered at 6 and 12 months, 93% and 99% at 90%, where this scale
    gave 90% and 97%, for the same coverage at shorter horizons. It follows the market no better where
    it matters and reads a short shock into a long horizon.)"""
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
    return _lookup(*_ranked(scores, weights), np.asarray(levels, dtype=np.float64))


def _ranked(scores: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scores sorted, and their cumulative weight as a share of the whole plus the new origin's 1."""
    order = np.argsort(scores, kind="stable")
    weights = np.asarray(weights, dtype=np.float64)
    return np.asarray(scores, dtype=np.float64)[order], np.cumsum(weights[order]) / (weights.sum() + 1.0)


def _lookup(ranked: np.ndarray, cumulative: np.ndarray, levels: np.ndarray) -> np.ndarray:
    # A level met exactly (k / (n + 1) with equal weights) counts as reached, as in MAPIE.
    at = np.searchsorted(cumulative, levels - 1e-12, side="left")
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
    The calibration of fold k uses only scores of rows whose labels ended before its first origin, and
    an adaptive level only the misses of rows whose labels ended before each row's origin.
    """
    levels = check_levels(levels, min_scores)
    scores = scores_of(forecast, actual, scale)
    q, _ = _walk(scores, folds, matured_counts(label_end, origins), levels, min_scores, calibration)
    half = q * scale[:, None]
    return forecast[:, None] - half, forecast[:, None] + half, q


def _walk(
    scores: np.ndarray,
    folds: np.ndarray,
    counts: np.ndarray,
    levels: tuple[float, ...],
    min_scores: int,
    calibration: Calibration,
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's quantile per level, and, with an adaptive level, the running sum of (missed - (1 - level))
    over the rows before each row (rows + 1, levels; each decayed by the calibration's memory): what the
    adaptive level of an origin reads at its matured count."""
    nominal = np.asarray(levels)
    q = np.full((len(scores), len(levels)), np.nan)
    running = np.zeros((len(scores) + 1, len(levels)))
    first = np.flatnonzero(np.r_[True, folds[1:] != folds[:-1]]) if len(folds) else np.array([], dtype=int)
    for start, end in zip(first, np.r_[first[1:], len(folds)], strict=True):
        history = scores[: counts[start]]
        history = history[np.isfinite(history)]
        if not calibration.adapt_rate:
            if len(history) >= min_scores:
                q[start:end] = calibration.quantiles(history, levels)
            continue
        if len(history) < min_scores:
            decay = calibration.memory ** np.arange(1, end - start + 1)[:, None]
            running[start + 1 : end + 1] = running[start] * decay
            continue
        quantile = calibration.quantile_function(history)
        for row in range(start, end):  # each row's level reads the misses of rows matured before it
            q[row] = quantile(calibration.adapted(nominal, running[counts[row]], quantile.top))
            scored = np.isfinite(scores[row]) & np.isfinite(q[row])
            missed = np.where(scored, (scores[row] > q[row]) - (1 - nominal), 0.0)
            running[row + 1] = running[row] * calibration.memory + missed
    return q, running


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

    `history` holds stored rows in time order with `origin`, `fold`, `label_end` and `score` (the
    normalised residual); only rows whose label ended before `origin` calibrate, and with an adaptive
    level the walk over the history is replayed to know which of them missed. None when fewer than
    `min_scores` have matured or the scale is unknown.
    """
    if not np.isfinite(scale) or scale <= 0:
        return None
    return interval_of(forecast, scale, quantiles_at(history, origin, levels, min_scores, calibration), levels)


def interval_of(
    forecast: float, scale: float, q: np.ndarray | None, levels: tuple[float, ...]
) -> dict[float, tuple[float, float]] | None:
    """The interval at each level from the quantiles of the normalised residuals (`quantiles_at`)."""
    if q is None or not np.isfinite(scale) or scale <= 0:
        return None
    return {v: (forecast - q[i] * scale, forecast + q[i] * scale) for i, v in enumerate(levels)}


def walk(history: pl.DataFrame, levels: tuple[float, ...], min_scores: int, calibration: Calibration) -> np.ndarray:
    """The adaptive level's running misses over `history` (`_walk`): the same for every origin after it."""
    scores = history["score"].fill_null(np.nan).to_numpy()
    counts = matured_counts(history["label_end"], history["origin"])
    return _walk(scores, history["fold"].to_numpy(), counts, levels, min_scores, calibration)[1]


def quantiles_at(
    history: pl.DataFrame,
    origin,
    levels: tuple[float, ...] = LEVELS,
    min_scores: int = MIN_SCORES,
    calibration: Calibration = Calibration(),
    walked: np.ndarray | None = None,
) -> np.ndarray | None:
    """The quantile per level of the normalised residuals an interval at `origin` is calibrated on
    (`interval_at`'s history and rule); None when fewer than `min_scores` have matured. It depends on the
    origin only through which rows had matured, so every origin after the same rows shares it; `walked` is
    `walk(history, ...)` when the caller keeps it for many origins."""
    levels = check_levels(levels, min_scores)
    matured = history.filter(pl.col("label_end") < origin)
    finite = matured.filter(pl.col("score").is_finite())["score"].to_numpy()
    if len(finite) < min_scores:
        return None
    level = np.asarray(levels)
    if calibration.adapt_rate:
        running = walked if walked is not None else walk(history, levels, min_scores, calibration)
        quantile = calibration.quantile_function(finite)
        q = quantile(calibration.adapted(level, running[matured.height], quantile.top))
    else:
        q = calibration.quantiles(finite, level)
    return q if np.isfinite(q).all() else None


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
