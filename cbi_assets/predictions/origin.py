"""The latest forecast origin of one market x horizon: the newest row of its master feature table, cut
and scaled for each model as the last walk-forward fold's test rows were, with what the desk reads
beside the forecast (price, volatility scale, regime).

The models MLflow keeps are the last fold's, trained only on rows whose labels ended before that
fold's test rows; the newest origin comes after all of them, so forecasting it uses nothing from its
own future.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from cbi_assets.catalogue import Horizon, Market, regime_of
from cbi_assets.ensembles.conformal import volatility_scale
from cbi_assets.ensembles.members import state_asof
from cbi_assets.models.inputs import (
    TrainingArrays,
    forecast_inputs,
    horizon_rows,
    return_column,
    season_rows,
)
from cbi_assets.models.registry import Budget, Inputs, Shape
from cbi_assets.training.scaling import RobustScaler
from cbi_assets.training.sets import feature_timeframe, time_key


@dataclass(frozen=True)
class LatestOrigin:
    key: str  # "date" or "ts"
    time: Any  # the origin: a session date, or a bar's close time (UTC)
    target: dt.datetime  # when its label matures (UTC)
    data: TrainingArrays  # master rows from the last fold's first training row to the origin
    fold: dict[str, Any]  # bounds in `data`: the fold's training rows, and the origin as its one test row
    scaler: RobustScaler  # the last fold's
    scale: float  # the volatility scale over the horizon at the origin (conformal.volatility_scale)

    @property
    def raw(self) -> np.ndarray:
        """The origin's unscaled features, as a person reads them."""
        return self.data.x[-1].astype(np.float64)

    def inputs(self, shape: Shape, budget: Budget) -> Inputs:
        """The origin as a family of `shape` sees a test row: scaled, windowed, with its return history."""
        return forecast_inputs(self.data, self.fold, self.scaler, shape, budget)


def target_time(time: Any, horizon: Horizon, sessions: list[dt.date]) -> dt.datetime:
    """When a forecast made at `time` matures: `bars` sessions later for a daily horizon (at 00:00 UTC,
    standing for that session's close), `bars` minutes later intraday. `sessions` are the exchange's
    settlement days from the origin on."""
    if horizon.intraday:
        return time + dt.timedelta(minutes=horizon.bars)
    later = [d for d in sessions if d > time]
    if len(later) < horizon.bars:
        raise ValueError(f"the settlement calendar ends {len(later)} sessions after {time}; {horizon.bars} needed")
    return dt.datetime.combine(later[horizon.bars - 1], dt.time(), dt.UTC)


def as_timestamp(time: Any) -> dt.datetime:
    """A daily origin's date as 00:00 UTC; an intraday time as it is."""
    return time if isinstance(time, dt.datetime) else dt.datetime.combine(time, dt.time(), dt.UTC)


@dataclass(frozen=True)
class LastFold:
    """The last walk-forward fold, whose models MLflow keeps: its scaler, and the time keys of its first
    training row (after the profile's cap on training rows) and of its last."""

    fold: int
    scaler: RobustScaler
    first: Any
    trained_until: Any

    @property
    def features(self) -> list[str]:
        return list(self.scaler.columns)


def last_fold(keys: pl.Series, folds: pl.DataFrame, scalers: pl.DataFrame, budget: Budget) -> LastFold:
    """The last fold of the stored walk-forward `folds`, with its scaler from `scalers`; `keys` is the
    training set's time key column (the rows the folds index), `budget` the profile's (its training-row
    cap moves the first training row, as in `fold_inputs`)."""
    if folds.is_empty():
        raise ValueError("the folds table is empty; materialize the walk-forward folds first")
    last = folds.sort("fold").row(-1, named=True)
    scaler = RobustScaler.from_frame(scalers.filter(pl.col("fold") == last["fold"]).drop("fold"))
    train_hi = last["train_hi"]
    train_lo = last["train_lo"]
    if budget.max_train_rows:
        train_lo = max(train_lo, train_hi + 1 - budget.max_train_rows)
    return LastFold(last["fold"], scaler, keys[train_lo], keys[train_hi])


def origin_rows(master: pl.LazyFrame, key: str, last: LastFold, column: str, table: str) -> pl.DataFrame:
    """The rows of `master` (described as `table` in errors) from the last fold's first training row on,
    in time order: the time key, the one-step return `column` and the features the models were trained on."""
    features = last.features
    available = master.collect_schema().names()
    missing = [c for c in (key, column, *features) if c not in available]
    if missing:
        raise ValueError(
            f"{table} lacks {len(missing)} of the columns the models were trained on (first: "
            f"{missing[0]}); rebuild the training set and the models from the same master table"
        )
    rows = master.filter(pl.col(key) >= last.first).select(*dict.fromkeys([key, column, *features])).sort(key).collect()
    if rows.is_empty():
        raise ValueError(f"{table} has no rows from {last.first} on; rebuild the master features")
    return rows


def origin_arrays(
    rows: pl.DataFrame, key: str, last: LastFold, column: str, horizon: Horizon
) -> tuple[TrainingArrays, dict[str, Any]]:
    """`origin_rows` as arrays, and the fold over them whose one test row is the last row (the origin)."""
    features = last.features
    hi = rows[key].search_sorted(last.trained_until, side="right") - 1
    returns = rows[column].cast(pl.Float64).fill_nan(None).fill_null(0.0).to_numpy()
    n = rows.height
    data = TrainingArrays(
        x=rows.select(features).to_numpy().astype(np.float32),
        y=np.zeros(n),
        weight=np.ones(n),
        returns=returns,
        features=tuple(features),
        horizon=horizon_rows(horizon),
        season=season_rows(horizon),
    )
    return data, {"fold": last.fold, "train_lo": 0, "train_hi": int(hi), "test_lo": n - 1, "test_hi": n - 1}


def latest_origin(
    last: LastFold, master: pl.LazyFrame, market: Market, horizon: Horizon, sessions: list[dt.date]
) -> LatestOrigin:
    """The newest row of the master table `master` as a test row of the `last` fold; `sessions` are the
    exchange's settlement days from the origin on."""
    key, column = time_key(horizon), return_column(market, horizon)
    rows = origin_rows(master, key, last, column, f"the {market} master_{feature_timeframe(horizon)} table")
    data, fold = origin_arrays(rows, key, last, column, horizon)
    return origin_of(last, data, fold, key, rows[key][-1], horizon, sessions)


def origin_of(
    last: LastFold, data: TrainingArrays, fold: dict[str, Any], key: str, time: Any, horizon: Horizon, sessions
) -> LatestOrigin:
    """The last row of `data` (rows from the last fold's first training row on, `fold` over them as
    `origin_arrays` makes it) as the forecast origin at `time`."""
    scale = float(volatility_scale(data.returns, horizon_rows(horizon))[-1])
    return LatestOrigin(key, time, target_time(time, horizon, sessions), data, fold, last.scaler, scale)


def origin_state(origin: LatestOrigin, state: pl.DataFrame | None) -> str:
    """The data-driven regime state known at the origin (`members.state_asof`'s rule)."""
    rows = pl.DataFrame({origin.key: [origin.time]})
    return state_asof(rows, state, origin.key)["state"][0]


def origin_regime(origin: LatestOrigin) -> str:
    """The named calendar regime the origin's session falls in."""
    day = origin.time.date() if isinstance(origin.time, dt.datetime) else origin.time
    return regime_of(day).name


def origin_price(bars: pl.DataFrame, origin: LatestOrigin) -> float:
    """The front contract's close at the origin, from `bars` (the continuous daily bars, or the MES
    bars of the feature timeframe, both with the origin's time key and `close`)."""
    found = bars.filter(pl.col(origin.key) == origin.time)["close"]
    if found.is_empty() or not np.isfinite(found[-1]):
        raise ValueError(
            f"no close at the forecast origin {origin.time}: the bars and the master features disagree; "
            "rebuild the features"
        )
    return float(found[-1])
