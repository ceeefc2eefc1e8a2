"""Training sets per asset x horizon: master features beside their labels, weights and regime.

A row is a forecast origin: the features known at its close, the label over the horizon after
it, the named regime of its session and its sample weight (regime weight x label uniqueness).
Only labelled rows are kept; the walk-forward folds index these rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from cbi_assets.catalogue import Horizon
from cbi_assets.regimes.calendar import regimes_of
from cbi_assets.training.folds import split
from cbi_assets.training.labels import (
    daily_labels,
    intraday_labels,
    label_uniqueness,
    sample_weights,
)
from cbi_assets.training.scaling import RobustScaler

# Columns a training set carries beside the features.
LABEL_COLUMNS = ("label_end", "forward_return", "forward_price", "direction")
BARRIER_COLUMNS = ("barrier_label", "barrier_touch", "barrier_return")
WEIGHT_COLUMNS = ("regime", "regime_weight", "uniqueness", "weight")


def feature_timeframe(horizon: Horizon) -> str:
    """The master table a horizon learns from: daily for daily horizons, the same timeframe intraday
    (a 5-minute forecast is made at each closed 5-minute bar)."""
    return horizon.name if horizon.intraday else "1d"


def time_key(horizon: Horizon) -> str:
    return "ts" if horizon.intraday else "date"


def labels_for(
    horizon: Horizon,
    daily: pl.DataFrame | None = None,
    minutes: pl.DataFrame | None = None,
    at: pl.Series | None = None,
) -> pl.DataFrame:
    """Labels of one horizon: on daily bars (`date, close, adj`) or on 1-minute bars at the times `at`."""
    if horizon.intraday:
        return intraday_labels(minutes, at, horizon.bars)
    return daily_labels(daily.select("date", "close", "adj"), horizon.bars)


def training_set(
    features: pl.DataFrame, feature_names: list[str], labels: pl.DataFrame, horizon: Horizon, calendar: pl.DataFrame
) -> pl.DataFrame:
    """Keys, labels, weights and features of the labelled rows, in time order."""
    key = time_key(horizon)
    day = "trade_date" if horizon.intraday else "date"
    keys = [c for c in (key, "trade_date", "available_at") if c in features.columns]
    frame = (
        features.select(*keys, *feature_names)
        .join(labels, on=key, how="inner")
        .filter(pl.col("forward_return").is_not_null())
        .sort(key)
    )
    dates = frame[day].cast(pl.Date)
    weights = pl.DataFrame(
        {
            "regime": regimes_of(dates, calendar),
            "regime_weight": sample_weights(dates, calendar),
            "uniqueness": label_uniqueness(frame[key], frame["label_end"]),
        }
    ).with_columns((pl.col("regime_weight") * pl.col("uniqueness")).alias("weight"))
    label_columns = [c for c in (*LABEL_COLUMNS, *BARRIER_COLUMNS) if c in frame.columns]
    return pl.concat([frame.select(*keys, *label_columns), weights, frame.select(feature_names)], how="horizontal")


def feature_columns(frame: pl.DataFrame) -> list[str]:
    """The feature columns of a training set: everything but keys, labels and weights."""
    other = {"ts", "date", "trade_date", "available_at", *LABEL_COLUMNS, *BARRIER_COLUMNS, *WEIGHT_COLUMNS}
    return [c for c in frame.columns if c not in other]


def fold_scalers(frame: pl.DataFrame, folds: pl.DataFrame, feature_names: list[str]) -> pl.DataFrame:
    """A robust scaler per fold, fitted on that fold's training rows only."""
    scalers = []
    for fold in folds.iter_rows(named=True):
        train, _ = split(frame, fold)
        scalers.append(
            RobustScaler.fit(train, feature_names).to_frame().with_columns(pl.lit(fold["fold"]).alias("fold"))
        )
    return pl.concat(scalers) if scalers else pl.DataFrame()


@dataclass(frozen=True)
class MetaPlan:
    """A regime's task: a support set of its first sessions, then a query set after the support labels end."""

    support_days: int = 30
    query_days: int = 30
    min_rows: int = 10  # fewer labelled rows in either set: the regime has no task


def meta_task(frame: pl.DataFrame, horizon: Horizon, plan: MetaPlan) -> tuple[pl.DataFrame, pl.DataFrame] | str:
    """(support, query) of one regime's rows, or the reason it has none.

    The query starts after every support label has ended (purge), so adapting on the support
    never sees a query outcome.
    """
    key = time_key(horizon)
    day = pl.col("trade_date" if horizon.intraday else "date").cast(pl.Date)
    days = frame.select(day.unique().sort()).to_series()
    if days.len() < plan.support_days:
        return f"{days.len()} sessions, fewer than the {plan.support_days} a support set needs"
    support = frame.filter(day <= days[plan.support_days - 1])
    query = frame.filter(pl.col(key) > support["label_end"].max())
    query_days = query.select(day.unique().sort()).to_series().head(plan.query_days)
    query = query.filter(day.is_in(query_days.implode()))
    if support.height < plan.min_rows or query.height < plan.min_rows:
        return (
            f"{support.height} support and {query.height} query rows once the support labels have ended "
            f"(at least {plan.min_rows} each needed)"
        )
    return support, query


def trained_on(logged: list[str]) -> tuple[str, ...]:
    """The features a run's model was trained on: its logged list, less the keys and labels that runs
    logged before only features were listed carry (every column of the training set)."""
    return tuple(feature_columns(pl.DataFrame(schema=dict.fromkeys(logged, pl.Float64))))
