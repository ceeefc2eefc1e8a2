"""Walk-forward training of one family: fit on each purged fold's training rows, forecast its test rows,
and collect the out-of-fold forecasts in the schema every later layer reads."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import polars as pl

from cbi_assets.catalogue import Horizon, Market
from cbi_assets.models.inputs import TrainingArrays, fold_inputs
from cbi_assets.models.registry import Budget, Family
from cbi_assets.training.scaling import RobustScaler
from cbi_assets.training.sets import time_key


def walk_family(
    family: Family,
    frame: pl.DataFrame,
    folds: pl.DataFrame,
    scalers: pl.DataFrame,
    market: Market,
    horizon: Horizon,
    budget: Budget,
    log: Callable[[str], None],
    data: TrainingArrays | None = None,
) -> tuple[pl.DataFrame, object, dict]:
    """Train and test one family on every fold: its out-of-fold forecasts, its last model and timings.

    `data` is the frame as arrays; pass it when walking several families over one frame.
    """
    if data is None:
        data = TrainingArrays.of(frame, market, horizon)
    key = time_key(horizon)
    parts, fit_s, predict_s, predicted = [], 0.0, 0.0, 0
    model = None
    for fold in folds.iter_rows(named=True):
        scaler = RobustScaler.from_frame(scalers.filter(pl.col("fold") == fold["fold"]).drop("fold"))
        train, test = fold_inputs(data, fold, scaler, family.shape, budget)
        started = time.perf_counter()
        model = family.fit(train, budget)
        fitted = time.perf_counter()
        forecast = model.predict(test)
        fit_s, predict_s = fit_s + fitted - started, predict_s + time.perf_counter() - fitted
        predicted += test.rows
        if forecast.mean.shape != (test.rows,) or not np.isfinite(forecast.mean).all():
            raise ValueError(
                f"{family.name} fold {fold['fold']}: the forecast has shape {forecast.mean.shape} or "
                f"non-finite values; expected {test.rows} finite returns"
            )
        rows = frame.slice(fold["test_lo"], test.rows).select(key, "regime", "forward_price", "forward_return")

        def column(values):
            return pl.Series(values, dtype=pl.Float64) if values is not None else pl.lit(None, pl.Float64)

        parts.append(
            rows.with_columns(
                pl.lit(fold["fold"]).alias("fold"),
                (pl.col("forward_price") * (-pl.col("forward_return")).exp()).alias("price"),
                pl.col("forward_return").alias("actual"),
                column(forecast.mean).alias("forecast"),
                column(forecast.lower).alias("lower"),
                column(forecast.upper).alias("upper"),
                column(forecast.sigma).alias("sigma"),
            ).drop("forward_return")
        )
        log(
            f"{family.name} {horizon.name} fold {fold['fold'] + 1}/{folds.height}: trained on {train.rows:,} rows "
            f"in {fitted - started:.2f}s"
        )
    timings = {"train_s_per_fold": fit_s / max(folds.height, 1), "predict_rows_per_s": predicted / max(predict_s, 1e-9)}
    return pl.concat(parts), model, timings
