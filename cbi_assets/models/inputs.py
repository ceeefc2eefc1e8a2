"""Adapters from one training set to each family's input: the fold's rows, robust-scaled by the
fold's own scaler, as 2-D rows, 3-D windows or the one-step return series."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from cbi_assets.catalogue import TIMEFRAMES, Horizon, Market
from cbi_assets.features.bars import SESSION_MINUTES
from cbi_assets.models.registry import Budget, Inputs, Shape, windows
from cbi_assets.regimes.calendar import known_by
from cbi_assets.training.labels import sample_weights
from cbi_assets.training.scaling import RobustScaler
from cbi_assets.training.sets import feature_columns, feature_timeframe, time_key

# Scaled features beyond this many IQRs are clipped: a network's activations saturate on the
# 2008 and 2020 tails long before the information in them runs out.
CLIP = 10.0
SESSIONS_PER_YEAR = 252


def horizon_rows(horizon: Horizon) -> int:
    """Rows a label reaches ahead: sessions for daily horizons; one bar of its own timeframe intraday."""
    return 1 if horizon.intraday else horizon.bars


def season_rows(horizon: Horizon) -> int:
    """Rows in a season: a year of sessions daily, one Globex session of bars intraday."""
    return SESSION_MINUTES // TIMEFRAMES[horizon.name] if horizon.intraday else SESSIONS_PER_YEAR


def rows_per_year(horizon: Horizon) -> int:
    """Rows a year of the horizon's training set holds: sessions daily, bars of its timeframe intraday."""
    return SESSIONS_PER_YEAR * (season_rows(horizon) if horizon.intraday else 1)


def return_column(market: Market, horizon: Horizon) -> str:
    """The feature holding each row's own one-step log return (its bar's close over the last)."""
    return f"{market.key}_{feature_timeframe(horizon)}_ret_1"


@dataclass(frozen=True)
class TrainingArrays:
    """One market x horizon training set as numpy arrays, in row (time) order."""

    x: np.ndarray  # (rows, features) float32, unscaled
    y: np.ndarray  # forward log return
    weight: np.ndarray
    returns: np.ndarray  # one-step log return of each row
    features: tuple[str, ...]
    horizon: int
    season: int
    # Set for walk-forward training: each fold weights its rows by the regimes declared by the end of its
    # training window (`regimes.calendar.known_by`); without, the stored weights (the whole calendar).
    calendar: pl.DataFrame | None = None
    days: pl.Series | None = None  # each row's session (Date)
    uniqueness: np.ndarray | None = None

    @classmethod
    def of(
        cls, frame: pl.DataFrame, market: Market, horizon: Horizon, calendar: pl.DataFrame | None = None
    ) -> TrainingArrays:
        features = feature_columns(frame)
        column = return_column(market, horizon)
        if column not in frame.columns:
            raise ValueError(
                f"{market} {horizon.name}: the training set has no {column!r} column (the one-step return "
                "statistical families model); rebuild the master features and training set"
            )
        unweighted = frame["weight"].is_null() | frame["weight"].is_nan() | (frame["weight"] < 0)
        if unweighted.any():
            row = int(unweighted.arg_true()[0])
            raise ValueError(
                f"{market} {horizon.name}: {int(unweighted.sum())} training rows have no valid weight "
                f"(first: row {row}, {frame[time_key(horizon)][row]}); rematerialize the training set"
            )
        return cls(
            x=frame.select(features).to_numpy().astype(np.float32, copy=False),
            y=frame["forward_return"].to_numpy().astype(np.float64),
            weight=frame["weight"].to_numpy().astype(np.float64),
            returns=frame[column].cast(pl.Float64).fill_nan(None).fill_null(0.0).to_numpy(),
            features=tuple(features),
            horizon=horizon_rows(horizon),
            season=season_rows(horizon),
            calendar=calendar,
            days=frame["trade_date" if horizon.intraday else "date"].cast(pl.Date) if calendar is not None else None,
            uniqueness=frame["uniqueness"].to_numpy().astype(np.float64) if calendar is not None else None,
        )

    def weights_for(self, lo: int, hi: int, trained_until: int) -> np.ndarray:
        """The weights of rows [lo, hi) for a model trained on rows up to `trained_until` (exclusive):
        regime weights as the calendar stood on that row's session, times label uniqueness."""
        if self.calendar is None or self.days is None:
            return self.weight[lo:hi]
        known = known_by(self.calendar, self.days[trained_until - 1])
        return sample_weights(self.days.slice(lo, hi - lo), known).to_numpy() * self.uniqueness[lo:hi]


def _scaled(x: np.ndarray, scaler: RobustScaler) -> np.ndarray:
    median = np.asarray(scaler.median, dtype=np.float32)
    scale = np.asarray(scaler.scale, dtype=np.float32)
    out = (x - median) / scale
    np.nan_to_num(out, copy=False, nan=0.0, posinf=CLIP, neginf=-CLIP)  # unknown -> the median
    return np.clip(out, -CLIP, CLIP, out=out)


def fold_inputs(
    data: TrainingArrays, fold: dict[str, Any], scaler: RobustScaler, shape: Shape, budget: Budget
) -> tuple[Inputs, Inputs]:
    """(train, test) Inputs of one fold (a row of the folds table: inclusive train/test row bounds).

    Training keeps the most recent `budget.max_train_rows` rows when the profile caps them. Test
    inputs carry the return history from the first training row, and sequence windows reach back
    into the rows before the slice, all known before each test row's close.
    """
    return _fold_inputs(data, fold, scaler, shape, budget, train=True)


def forecast_inputs(
    data: TrainingArrays, fold: dict[str, Any], scaler: RobustScaler, shape: Shape, budget: Budget
) -> Inputs:
    """The test half of `fold_inputs` alone: a forecast needs no training rows scaled."""
    return _fold_inputs(data, fold, scaler, shape, budget, train=False)[1]


def _fold_inputs(
    data: TrainingArrays, fold: dict[str, Any], scaler: RobustScaler, shape: Shape, budget: Budget, train: bool
) -> tuple[Inputs | None, Inputs]:
    if scaler.columns != data.features:
        raise ValueError(
            f"fold {fold['fold']}: the stored scaler covers {len(scaler.columns)} columns but the training "
            f"set has {len(data.features)} features; rematerialize the folds for this horizon"
        )
    train_hi, test_lo, test_hi = fold["train_hi"] + 1, fold["test_lo"], fold["test_hi"] + 1
    train_lo = fold["train_lo"]
    if budget.max_train_rows:
        train_lo = max(train_lo, train_hi - budget.max_train_rows)

    def x_of(lo: int, hi: int) -> np.ndarray:
        if shape != "sequence":
            return _scaled(data.x[lo:hi], scaler)
        start = max(0, lo - budget.sequence_length + 1)
        return windows(_scaled(data.x[start:hi], scaler), budget.sequence_length)[lo - start :]

    def inputs(lo: int, hi: int, labelled: bool) -> Inputs:
        return Inputs(
            x=x_of(lo, hi),
            y=data.y[lo:hi] if labelled else None,
            weight=data.weights_for(lo, hi, train_hi),
            returns=data.returns[train_lo:hi],
            horizon=data.horizon,
            season=data.season,
            feature_names=data.features,
        )

    return inputs(train_lo, train_hi, True) if train else None, inputs(test_lo, test_hi, False)
