"""How good the published forecasts were: metrics of matured predictions and the pass/fail rules.

Plain functions on polars frames of matured predictions (`outcomes.matured`): each row holds
`price` (at as_of), `forecast_return`, `forecast_price`, the interval bounds as log returns, and
`actual_return`, `actual_price`.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from cbi_assets.catalogue import MARKETS, Market

# MAPE (of price, in %) above which the champion of a horizon fails. Each is about the random
# walk's expected absolute move over the horizon, 0.8 * sigma * sqrt(horizon / year) rounded up,
# with sigma 25% a year for ZL and 18% for MES, a year being 252 sessions or 252 x 1,380 Globex
# minutes: a champion that misses by more than that does worse than saying "no change" would on a
# typical day. ZL 1w: 0.8 x 25% x sqrt(5 / 252) = 2.8%, so 3.0%.
MAPE_THRESHOLDS: dict[str, dict[str, float]] = {
    "ZL": {"1w": 3.0, "1m": 6.0, "3m": 10.0, "6m": 14.0, "12m": 20.0},
    "MES": {
        "1min": 0.03,
        "5min": 0.06,
        "15min": 0.1,
        "30min": 0.15,
        "1h": 0.2,
        "4h": 0.4,
        "1d": 1.0,
        "7d": 2.0,
        "30d": 4.0,
        "3m": 7.0,
        "6m": 10.0,
        "12m": 14.0,
    },
}
_unset = {a: sorted({h.name for h in m.horizons} - set(MAPE_THRESHOLDS.get(a, {}))) for a, m in MARKETS.items()}
if any(_unset.values()):
    raise ValueError(f"MAPE_THRESHOLDS lacks horizons {_unset}; give every horizon of the catalogue a threshold")

COVERAGE_NOMINAL = 0.9  # the interval the coverage rule judges
COVERAGE_TOLERANCE = 0.05  # coverage more than 5 points below nominal fails
MIN_MATURED = 5  # fewer matured champion predictions than this: no verdict yet
NOT_ENOUGH = "not enough matured predictions"
NO_PREDICTIONS = "no predictions yet"

# Move size bands of |actual_return| in units of the horizon's typical move (the median
# |forward return| over the lake's history): small below 0.5x, large above 1.5x, medium between.
MOVE_BANDS = (0.5, 1.5)
GROUP_KINDS = ("all", "regime", "state", "move_size", "pipeline")
# Which path published a row: 'live' (`cbi live`, every closed bar) or, null in the history, the evening upload.
EVENING = "evening"


def move_size(typical: float | None) -> pl.Expr:
    """'small', 'medium' or 'large' by |actual_return| / typical; 'unknown' without a typical move."""
    if not typical:
        return pl.lit("unknown").alias("move_size")
    ratio = pl.col("actual_return").abs() / typical
    small, large = MOVE_BANDS
    return (
        pl.when(ratio < small)
        .then(pl.lit("small"))
        .when(ratio > large)
        .then(pl.lit("large"))
        .otherwise(pl.lit("medium"))
        .alias("move_size")
    )


def _covered(level: int) -> pl.Expr:
    lower, upper = pl.col(f"lower_{level}"), pl.col(f"upper_{level}")
    inside = (pl.col("actual_return") >= lower) & (pl.col("actual_return") <= upper)
    # Rows without an interval do not count either way: the mean skips nulls, all-null gives null.
    return pl.when(lower.is_not_null() & upper.is_not_null()).then(inside.cast(pl.Float64))


def _sign(column: str) -> pl.Expr:
    return pl.col(column).sign()


METRICS = ("rows", "mape", "mae_return", "coverage_80", "coverage_90", "direction_accuracy", "random_walk_mape")


def _aggregates() -> list[pl.Expr]:
    ape = (pl.col("forecast_price") - pl.col("actual_price")).abs() / pl.col("actual_price") * 100
    random_walk = (pl.col("price") - pl.col("actual_price")).abs() / pl.col("actual_price") * 100
    return [
        pl.len().cast(pl.Int64).alias("rows"),
        ape.mean().alias("mape"),
        (pl.col("forecast_return") - pl.col("actual_return")).abs().mean().alias("mae_return"),
        _covered(80).mean().alias("coverage_80"),
        _covered(90).mean().alias("coverage_90"),
        (_sign("forecast_return") == _sign("actual_return")).cast(pl.Float64).mean().alias("direction_accuracy"),
        random_walk.mean().alias("random_walk_mape"),
    ]


def _with_intervals(frame: pl.DataFrame) -> pl.DataFrame:
    missing = [
        pl.lit(None, pl.Float64).alias(c)
        for c in ("lower_80", "upper_80", "lower_90", "upper_90")
        if c not in frame.columns
    ]
    return frame.with_columns(missing) if missing else frame


def metrics(matured: pl.DataFrame, typical: float | None) -> pl.DataFrame:
    """One row per (model_version, group_kind, group_value): all rows, by regime, by state, by
    move size and, once the history has the column, by pipeline (live or evening), each with rows,
    mape (%), mae_return, coverage_80/90 (0..1, null without intervals), direction_accuracy and
    random_walk_mape on the same rows."""
    schema = {
        "model_version": pl.String,
        "group_kind": pl.String,
        "group_value": pl.String,
        "rows": pl.Int64,
        **{m: pl.Float64 for m in METRICS[1:]},
    }
    if matured.is_empty():
        return pl.DataFrame(schema=schema)
    frame = _with_intervals(matured).with_columns(move_size(typical), pl.lit("all").alias("all"))
    if "pipeline" in frame.columns:
        frame = frame.with_columns(pl.col("pipeline").fill_null(EVENING))
    parts = []
    for kind in GROUP_KINDS:
        column = kind if kind in frame.columns else None
        if column is None:
            continue
        parts.append(
            frame.group_by("model_version", pl.col(column).cast(pl.String).fill_null("unknown").alias("group_value"))
            .agg(_aggregates())
            .with_columns(pl.lit(kind).alias("group_kind"))
        )
    out = pl.concat(parts, how="diagonal_relaxed").select(list(schema)).cast(schema)
    order = {k: i for i, k in enumerate(GROUP_KINDS)}
    return out.sort("model_version", pl.col("group_kind").replace_strict(order), "group_value")


@dataclass(frozen=True)
class Rules:
    """The pass/fail rules of one market x horizon."""

    mape_threshold: float
    min_rows: int = MIN_MATURED
    coverage_nominal: float = COVERAGE_NOMINAL
    coverage_tolerance: float = COVERAGE_TOLERANCE

    @classmethod
    def of(
        cls,
        market: Market,
        horizon: str,
        thresholds: dict[str, dict[str, float]] | None = None,
        min_rows: int = MIN_MATURED,
    ) -> Rules:
        table = thresholds or MAPE_THRESHOLDS
        try:
            threshold = table[market.symbol][horizon]
        except KeyError:
            raise KeyError(f"no MAPE threshold for {market} {horizon}; add it to MAPE_THRESHOLDS") from None
        return cls(threshold, min_rows)


def status(matured: pl.DataFrame, rules: Rules) -> dict:
    """The verdict on the champion's matured predictions (role 'champion', every version).

    MAPE above the threshold fails; 90% coverage more than `coverage_tolerance` below nominal
    fails. Fewer than `min_rows` matured rows gives 'not enough matured predictions', which is
    not a failure (passed, with both rules unjudged). So does coverage without enough interval rows.
    """
    champion = _with_intervals(matured.filter(pl.col("role") == "champion") if "role" in matured.columns else matured)
    base = {
        "rows": champion.height,
        "mape": None,
        "mape_threshold": rules.mape_threshold,
        "coverage_90": None,
        "coverage_nominal": rules.coverage_nominal,
        "mape_ok": None,
        "coverage_ok": None,
    }
    if champion.height < rules.min_rows:
        return {
            **base,
            "passed": True,
            "status": NOT_ENOUGH,
            "reason": f"{NOT_ENOUGH}: {champion.height} of the {rules.min_rows} needed",
        }
    row = champion.select(_aggregates()).row(0, named=True)
    mape, coverage = row["mape"], row["coverage_90"]
    mape_ok = mape <= rules.mape_threshold
    interval_rows = champion.filter(pl.col("lower_90").is_not_null() & pl.col("upper_90").is_not_null()).height
    floor = rules.coverage_nominal - rules.coverage_tolerance
    # A tolerance of 1e-9 keeps 0.85 (17 of 20) from failing against 0.9 - 0.05 = 0.8500000000000001.
    coverage_ok = None if interval_rows < rules.min_rows else bool(coverage >= floor - 1e-9)
    reasons = [f"MAPE {mape:.3f}% {'within' if mape_ok else 'above'} the {rules.mape_threshold}% threshold"]
    if coverage_ok is None:
        reasons.append(
            f"90% coverage not judged: {interval_rows} matured rows with an interval, {rules.min_rows} needed"
        )
    else:
        reasons.append(
            f"90% coverage {coverage:.1%} {'within' if coverage_ok else 'more than'} "
            f"{rules.coverage_tolerance * 100:.0f} points {'of' if coverage_ok else 'below'} "
            f"{rules.coverage_nominal:.0%}"
        )
    passed = mape_ok and coverage_ok is not False
    return {
        **base,
        "mape": mape,
        "coverage_90": coverage,
        "mape_ok": mape_ok,
        "coverage_ok": coverage_ok,
        "passed": passed,
        "status": "passed" if passed else "failed",
        "reason": "; ".join(reasons),
    }


def no_predictions(rules: Rules) -> dict:
    """The verdict when nothing was ever published for the market x horizon."""
    return {
        "rows": 0,
        "mape": None,
        "mape_threshold": rules.mape_threshold,
        "coverage_90": None,
        "coverage_nominal": rules.coverage_nominal,
        "mape_ok": None,
        "coverage_ok": None,
        "passed": True,
        "status": NO_PREDICTIONS,
        "reason": f"{NO_PREDICTIONS}: predictions.history holds no rows of it",
    }


def absolute_errors(matured: pl.DataFrame, typical: float | None) -> pl.DataFrame:
    """Each matured row's absolute % error of price with its regime and move size (for plots)."""
    return matured.with_columns(
        ((pl.col("forecast_price") - pl.col("actual_price")).abs() / pl.col("actual_price") * 100).alias("ape"),
        move_size(typical),
    )
