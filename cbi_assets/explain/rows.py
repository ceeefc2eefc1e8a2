"""The rows a model is explained on: the last walk-forward fold's test rows and the latest forecast
origin, scaled by the last fold's stored scaler through `fold_inputs`, exactly as that fold's
model (the one MLflow keeps) saw its inputs.

The latest origin is the newest row of the master feature table: its label has not matured, so it
is not in the training set, but it is the forecast the desk reads today.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from cbi_assets.models.inputs import TrainingArrays, fold_inputs
from cbi_assets.models.registry import Budget
from cbi_assets.training.scaling import RobustScaler


@dataclass(frozen=True)
class ExplainPlan:
    """How much a profile explains per model (`Profile.explain`)."""

    max_rows: int  # the most recent test rows of the last fold explained exactly (trees)
    network_rows: int  # of those, the rows a network is explained on (sampled SHAP is costly)
    background: int  # background windows a network's features are replaced with
    permutations: int  # antithetic permutations per explained network row
    drivers: int  # top drivers kept per forecast


@dataclass(frozen=True)
class ExplainedRows:
    key: str  # the time key: date (daily) or ts (intraday)
    times: pl.Series  # time of each explained row, oldest first; the last is the latest origin
    origin: tuple[str, ...]  # "fold" (a test row of the last fold) or "latest" (the newest origin)
    raw: np.ndarray  # (rows, features) unscaled feature values, as a person reads them
    features: tuple[str, ...]
    data: TrainingArrays  # the training set
    fold: dict[str, Any]  # the last fold, its test rows narrowed to the explained ones
    scaler: RobustScaler  # the last fold's
    tail: TrainingArrays | None  # the master table's newest rows, when the latest origin is past the training set

    @property
    def rows(self) -> int:
        return len(self.origin)

    def tabular(self, budget: Budget) -> np.ndarray:
        """(rows, features), scaled as the fold's tabular families saw them."""
        return self._inputs("tabular", budget)

    def windows(self, budget: Budget, length: int, background: int) -> tuple[np.ndarray, np.ndarray]:
        """(windows of the explained rows, `background` windows spread evenly over the fold's training
        rows), each (n, length, features), scaled and cut as the fold's sequence families saw them."""
        if self.tail is not None and length > len(self.tail.x):
            raise ValueError(
                f"a window of {length} rows reaches before the {len(self.tail.x)} master rows read for the "
                "latest origin; read more history (explained_rows' `history`)"
            )
        budget = dataclasses.replace(budget, sequence_length=length)
        train, _ = fold_inputs(self.data, self.fold, self.scaler, "sequence", budget)
        picked = np.unique(np.linspace(0, train.rows - 1, min(background, train.rows)).round().astype(int))
        return self._inputs("sequence", budget), np.asarray(train.x[picked])

    def _inputs(self, shape: str, budget: Budget) -> np.ndarray:
        _, test = fold_inputs(self.data, self.fold, self.scaler, shape, budget)
        parts = [np.asarray(test.x)]
        if self.tail is not None:
            n = len(self.tail.x)
            newest = {"fold": self.fold["fold"], "train_lo": 0, "train_hi": 0, "test_lo": n - 1, "test_hi": n - 1}
            parts.append(np.asarray(fold_inputs(self.tail, newest, self.scaler, shape, budget)[1].x))
        return np.concatenate(parts)

    def last(self, n: int) -> ExplainedRows:
        """The newest n rows (the latest origin among them)."""
        keep = min(n, self.rows)
        from_tail = 1 if self.tail is not None else 0
        fold = {**self.fold, "test_lo": max(self.fold["test_lo"], self.fold["test_hi"] + 1 - (keep - from_tail))}
        return dataclasses.replace(
            self, times=self.times.tail(keep), origin=self.origin[-keep:], raw=self.raw[-keep:], fold=fold
        )


def explained_rows(
    frame: pl.DataFrame,
    folds: pl.DataFrame,
    scalers: pl.DataFrame,
    master: pl.LazyFrame,
    data: TrainingArrays,
    key: str,
    max_rows: int,
    history: int,
) -> ExplainedRows:
    """The last fold's newest `max_rows` test rows and the latest origin of the master feature table.

    `history` is how many master rows before the latest a window needs (the longest sequence length).
    """
    if folds.is_empty():
        raise ValueError("the folds table is empty; materialize the walk-forward folds first")
    last = folds.sort("fold").row(-1, named=True)
    scaler = RobustScaler.from_frame(scalers.filter(pl.col("fold") == last["fold"]).drop("fold"))
    fold = {**last, "test_lo": max(last["test_lo"], last["test_hi"] + 1 - max_rows)}
    features = data.features
    newest = master.select(pl.col(key).max()).collect().item()
    trained_until = frame[key][fold["test_hi"]]
    times = frame[key].slice(fold["test_lo"], fold["test_hi"] - fold["test_lo"] + 1)
    raw = data.x[fold["test_lo"] : fold["test_hi"] + 1].astype(np.float64)
    origin = ["fold"] * len(times)
    tail = None
    if newest is not None and newest > trained_until:
        rows = master.filter(pl.col(key) <= newest).sort(key).tail(max(history, 1))
        available = rows.collect_schema().names()
        missing = [f for f in features if f not in available]
        if missing:
            raise ValueError(
                f"the master table lacks {len(missing)} of the training set's features (first: "
                f"{missing[0]}); rebuild the training set and the models from the same master table"
            )
        rows = rows.select(key, *features).collect()
        x = rows.select(features).to_numpy().astype(np.float32)
        tail = dataclasses.replace(data, x=x, y=np.zeros(len(x)), weight=np.ones(len(x)), returns=np.zeros(len(x)))
        times = pl.concat([times, rows[key].tail(1)])
        raw = np.concatenate([raw, x[-1:].astype(np.float64)])
        origin.append("latest")
    else:
        origin[-1] = "latest"  # the newest labelled row is the newest origin there is
    return ExplainedRows(key, times, tuple(origin), raw, features, data, fold, scaler, tail)
