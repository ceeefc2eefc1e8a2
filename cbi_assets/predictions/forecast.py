"""One published forecast: a model's forecast for the latest origin with its conformal intervals,
conviction and confidence, computed from the families' stored walk-forward history only.

The interval of a model is calibrated on that model's own matured out-of-fold errors, scaled by the
volatility known at each origin (the same conformal calibration as the ensemble's, `conformal.interval_at`);
conviction and confidence are the ensemble's definitions applied to this forecast.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from cbi_assets.ensembles.conformal import Calibration, interval_of, level_name, quantiles_at, walk
from cbi_assets.ensembles.forecasts import described, typical_move_before
from cbi_assets.ensembles.members import DIRECTIONLESS, Members

HISTORY_COLUMNS = ("origin", "fold", "label_end", "scale", "actual")


def history_of(members: Members) -> pl.DataFrame:
    """The walk-forward rows a forecast is calibrated on: origin, fold, label_end, scale, actual and a column
    per family."""
    return members.rows.select(pl.col(members.key).alias("origin"), *HISTORY_COLUMNS[1:]).with_columns(
        pl.Series(n, members.forecasts[:, i]) for i, n in enumerate(members.names)
    )


def published(
    point: float,
    calibrate_on: str,
    family_forecasts: dict[str, float],
    history: pl.DataFrame,
    origin,
    price: float,
    scale: float,
    levels: tuple[float, ...],
    min_scores: int,
    calibration: Calibration,
    memo: dict | None = None,
) -> dict:
    """Forecast return and price, interval bounds per level (returns and prices; None with too little
    matured history), conviction across the families' forecasts, confidence, spread and typical move.

    calibrate_on:     the family whose matured errors calibrate the interval (the model's own, or for a
                      regime specialist the champion it replaced).
    family_forecasts: every family's forecast for the origin (the ensemble the conviction is read from).
    history:          `history_of(members)`; only rows whose label ended before `origin` are used.
    calibration:      the horizon's (`Calibration.of`), as the ensemble's walk-forward intervals use.
    memo:             where a caller forecasting many origins keeps the calibrated quantiles: they change only
                      when another stored row has matured (`conformal.quantiles_at`).
    """
    if calibrate_on not in history.columns:
        raise ValueError(
            f"no walk-forward history of {calibrate_on!r} to calibrate its interval on (stored: "
            f"{[c for c in history.columns if c not in HISTORY_COLUMNS]})"
        )
    memo = {} if memo is None else memo
    matured = int((history["label_end"] < origin).sum())
    if (calibrate_on, matured) not in memo:
        if calibrate_on not in memo:
            scores = history.select(
                "origin",
                "fold",
                "label_end",
                ((pl.col("actual") - pl.col(calibrate_on)).abs() / pl.col("scale")).alias("score"),
            )
            memo[calibrate_on] = (
                scores,
                walk(scores, levels, min_scores, calibration) if calibration.adapt_rate else None,
            )
        scores, walked = memo[calibrate_on]
        memo[(calibrate_on, matured)] = quantiles_at(scores, origin, levels, min_scores, calibration, walked)
    q = memo[(calibrate_on, matured)]
    intervals = interval_of(point, scale, q, levels)
    directional = [v for n, v in family_forecasts.items() if n not in DIRECTIONLESS]
    out = described(point, np.array(directional), intervals, typical_move_before(history, origin), price)
    out["forecast_return"] = out.pop("forecast")
    # Without an interval the bounds are stored as nulls, so every row has the same columns.
    empty = {
        f"{side}_{level_name(v)}{unit}": None for v in levels for side in ("lower", "upper") for unit in ("", "_price")
    }
    return {**empty, **out, "price": price}


def drivers_json(drivers: pl.DataFrame | None) -> str:
    """Top drivers as the JSON list the history stores: feature, value (unscaled), shap, in rank order."""
    if drivers is None or drivers.is_empty():
        return "[]"
    rows = drivers.sort("rank").select("feature", "value", "shap").to_dicts()
    return json.dumps(
        [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in rows]
    )
