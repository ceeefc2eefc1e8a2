"""One published forecast: a model's forecast for the latest origin with its conformal intervals,
conviction and confidence, computed from the families' stored walk-forward history only.

The interval of a model is calibrated on that model's own matured out-of-fold errors, scaled by the
volatility known at each origin (the same split-conformal rule as the ensemble's, `conformal.interval_at`);
conviction and confidence are the ensemble's definitions applied to this forecast.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from cbi_assets.ensembles.conformal import interval_at, level_name
from cbi_assets.ensembles.conviction import confidence, conviction
from cbi_assets.ensembles.members import DIRECTIONLESS, Members


def history_of(members: Members) -> pl.DataFrame:
    """The walk-forward rows a forecast is calibrated on: label_end, scale, actual and a column per family."""
    return members.rows.select("label_end", "scale", "actual").with_columns(
        pl.Series(n, members.forecasts[:, i]) for i, n in enumerate(members.names))


def published(point: float, calibrate_on: str, family_forecasts: dict[str, float], history: pl.DataFrame, origin,
              price: float, scale: float, levels: tuple[float, ...], min_scores: int) -> dict:
    """Forecast return and price, interval bounds per level (returns and prices; None with too little
    matured history), conviction across the families' forecasts, confidence, spread and typical move.

    calibrate_on:     the family whose matured errors calibrate the interval (the model's own, or for a
                      regime specialist the champion it replaced).
    family_forecasts: every family's forecast for the origin (the ensemble the conviction is read from).
    history:          `history_of(members)`; only rows whose label ended before `origin` are used.
    """
    if calibrate_on not in history.columns:
        raise ValueError(f"no walk-forward history of {calibrate_on!r} to calibrate its interval on (stored: "
                         f"{[c for c in history.columns if c not in ('label_end', 'scale', 'actual')]})")
    scores = history.select("label_end", ((pl.col("actual") - pl.col(calibrate_on)).abs() / pl.col("scale"))
                            .alias("score"))
    intervals = interval_at(point, scale, scores, origin, levels, min_scores)
    directional = np.array([[v for n, v in family_forecasts.items() if n not in DIRECTIONLESS]])
    spread = float(directional.std()) if directional.size else np.nan
    matured = history.filter(pl.col("label_end") < origin)["actual"].abs()
    typical = float(matured.mean()) if matured.len() else np.nan
    out = {"forecast_return": point, "forecast_price": price * float(np.exp(point)), "price": price,
           "conviction": float(conviction(directional, np.array([point]))[0]) if directional.size else None,
           "spread": spread, "typical_move": typical, "confidence": None}
    for level in levels:
        n = level_name(level)
        lo, hi = intervals[level] if intervals else (None, None)
        out |= {f"lower_{n}": lo, f"upper_{n}": hi,
                f"lower_{n}_price": None if lo is None else price * float(np.exp(lo)),
                f"upper_{n}_price": None if hi is None else price * float(np.exp(hi))}
    if intervals:
        lo, hi = intervals[max(levels)]
        out["confidence"] = float(confidence(np.array([(hi - lo) / 2]), np.array([spread]), np.array([typical]))[0])
    return out


def drivers_json(drivers: pl.DataFrame | None) -> str:
    """Top drivers as the JSON list the history stores: feature, value (unscaled), shap, in rank order."""
    if drivers is None or drivers.is_empty():
        return "[]"
    rows = drivers.sort("rank").select("feature", "value", "shap").to_dicts()
    return json.dumps([{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
                       for r in rows])
