"""One family's explanation on one market x horizon: SHAP values of the model MLflow keeps on the
explained rows, each forecast's top drivers, and how importance moved since the previous training."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from cbi_assets.catalogue import Horizon, Market
from cbi_assets.explain.importance import importance, importance_drift
from cbi_assets.explain.rows import ExplainedRows, ExplainPlan
from cbi_assets.explain.shapley import (
    Attribution,
    attribute,
    drivers,
    long_format,
    no_attribution_reason,
    window_length,
)
from cbi_assets.models.registry import Budget
from cbi_assets.training.sets import trained_on

PARTS = ("shap", "drivers", "importance", "drift")  # the tables of an explanation, one per family each


@dataclass
class Explained:
    """One family's explanation on one horizon (frames empty when it has no attribution)."""

    family: str
    run_id: str
    champion: bool
    status: str  # how it was explained, or why it has no attribution
    attribution: Attribution | None = None
    values: np.ndarray | None = None
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)  # keyed by PARTS
    drift: dict = field(default_factory=dict)


def _attribute(
    model, features: tuple[str, ...], rows: ExplainedRows, budget: Budget, plan: ExplainPlan
) -> tuple[Attribution, ExplainedRows]:
    """SHAP values of a model on the explained rows (the newest few for a network), with its columns
    picked by name from the training set's."""
    index = [rows.features.index(f) for f in features]
    length = window_length(model)
    if length is None:
        x = rows.tabular(budget)[:, index]
        return attribute(model, x, features), rows
    newest = rows.last(plan.network_rows + 1)
    windows, background = newest.windows(budget, length, plan.background)
    return attribute(
        model, windows[:, :, index], features, background=background[:, :, index], permutations=plan.permutations
    ), newest


def explain_family(
    tracking,
    market: Market,
    horizon: Horizon,
    family: str,
    run_ids: list[str],
    rows: ExplainedRows,
    budget: Budget,
    plan: ExplainPlan,
    champion: bool,
) -> Explained:
    """Explain the latest training (run_ids[0]) on the rows and, when there is a previous one
    (run_ids[1]), compare their importance on the same rows."""
    model, features = tracking.load_model(run_ids[0])
    features = trained_on(features)
    if features != rows.features:
        raise ValueError(
            f"{market} {horizon.name} {family}: MLflow run {run_ids[0]} was trained on {len(features)} "
            f"features but the training set has {len(rows.features)}; rematerialize {market.key}/models "
            "for this horizon"
        )
    reason = no_attribution_reason(model)
    if reason:
        return Explained(
            family,
            run_ids[0],
            champion,
            f"no feature attribution: {reason}",
            drift={"drift": "no feature attribution to compare"},
        )
    found, shown = _attribute(model, tuple(features), rows, budget, plan)
    out = Explained(family, run_ids[0], champion, f"{found.method} on {shown.rows} forecasts", found, shown.raw)
    keys = (
        pl.DataFrame({rows.key: shown.times, "origin": list(shown.origin)})
        .with_row_index("row")
        .with_columns(
            pl.col("row").cast(pl.Int64), pl.Series("base", found.base), pl.Series("forecast", found.forecast)
        )
    )
    shap = long_format(found, shown.raw)
    out.frames["shap"] = keys.select("row", rows.key, "origin").join(shap, on="row").drop("row")
    out.frames["drivers"] = keys.join(drivers(found, shown.raw, plan.drivers), on="row").drop("row")
    latest = importance(found)
    out.frames["importance"] = latest
    if len(run_ids) < 2:
        out.drift = {"drift": f"one training so far (run {run_ids[0][:8]}); drift needs a second"}
        return out
    previous, previous_features = tracking.load_model(run_ids[1])
    previous_features = trained_on(previous_features)
    missing = [f for f in previous_features if f not in rows.features]
    if missing:
        out.drift = {
            "drift": f"the previous training (run {run_ids[1][:8]}) used {len(missing)} features the training "
            f"set no longer has (first: {missing[0]}); not compared"
        }
        return out
    before, _ = _attribute(previous, tuple(previous_features), rows, budget, plan)
    summary, movers = importance_drift(importance(before), latest)
    out.frames["drift"] = movers
    out.drift = {"previous_run": run_ids[1], **summary}
    return out


def summary_frame(explained: list[Explained]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "family": e.family,
                "champion": e.champion,
                "run_id": e.run_id,
                "status": e.status,
                "top_feature": e.frames["importance"]["feature"][0] if "importance" in e.frames else None,
                "previous_run": e.drift.get("previous_run"),
                "rank_correlation": e.drift.get("rank_correlation"),
                "drift": e.drift.get("drift", ""),
            }
            for e in explained
        ],
        schema={
            "family": pl.String,
            "champion": pl.Boolean,
            "run_id": pl.String,
            "status": pl.String,
            "top_feature": pl.String,
            "previous_run": pl.String,
            "rank_correlation": pl.Float64,
            "drift": pl.String,
        },
    )


def warehouse_drivers(market: Market, horizon: str, key: str, explained: list[Explained]) -> pl.DataFrame:
    """models.drivers rows: the top drivers of the latest origin of each explained family."""
    schema = {
        "asset": pl.String,
        "horizon": pl.String,
        "family": pl.String,
        "champion": pl.Boolean,
        "date": pl.Date,
        "ts": pl.Datetime("us", "UTC"),
        "rank": pl.Int32,
        "feature": pl.String,
        "value": pl.Float64,
        "shap": pl.Float64,
        "sign": pl.Int8,
    }
    parts = []
    for e in explained:
        if "drivers" not in e.frames:
            continue
        latest = e.frames["drivers"].filter(pl.col("origin") == "latest")
        when = latest[key]
        parts.append(
            latest.select(
                pl.lit(market.symbol).alias("asset"),
                pl.lit(horizon).alias("horizon"),
                pl.lit(e.family).alias("family"),
                pl.lit(e.champion).alias("champion"),
                (when if key == "date" else pl.lit(None)).cast(pl.Date).alias("date"),
                (when if key == "ts" else pl.lit(None)).cast(schema["ts"]).alias("ts"),
                "rank",
                "feature",
                "value",
                "shap",
                "sign",
            )
        )
    return pl.concat(parts).cast(schema) if parts else pl.DataFrame(schema=schema)
