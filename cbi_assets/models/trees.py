"""Gradient-boosted trees on the tabular rows: LightGBM (gbdt with quantile intervals, and DART) and
XGBoost, weighted by regime and label uniqueness, stopped early on a purged validation tail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cbi_assets.models.registry import (
    Budget,
    Forecast,
    Inputs,
    register,
    validation_split,
)

# Each family's hyperparameters, defined once: the fit uses them and MLflow logs them (register's params).
# The budget adds rounds, early stopping, seed and threads per profile.
LIGHTGBM = {
    "objective": "regression",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.7,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
}
INTERVAL = (0.1, 0.9)  # quantiles of LightGBM's forecast interval
# DART cannot stop early and each round rescales the dropped trees, so it gets a fixed, smaller budget.
DART_ROUNDS = 100
XGBOOST = {
    "objective": "reg:squarederror",
    "eta": 0.05,
    "max_depth": 5,
    "subsample": 0.8,
    "colsample_bytree": 0.7,
    "min_child_weight": 5.0,
    "lambda": 1.0,
    "tree_method": "hist",
}


def _recent(train: Inputs, budget: Budget) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and mean-1 weights of the rows a fold trains on (the most recent, if capped)."""
    keep = slice(-budget.max_train_rows, None) if budget.max_train_rows else slice(None)
    weight = train.weight[keep].astype(np.float64)
    return train.x[keep], train.y[keep], weight / weight.mean()


def _lightgbm_params(budget: Budget, **extra: Any) -> dict[str, Any]:
    return {
        **LIGHTGBM,
        "seed": budget.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
        "num_threads": budget.threads or 0,
        **extra,
    }


@dataclass
class LightGBMModel:
    booster: Any
    quantiles: tuple[Any, Any] | None = None

    @property
    def params(self) -> dict:
        return {"best_iteration": self.booster.best_iteration or self.booster.current_iteration()}

    def predict(self, inputs: Inputs) -> Forecast:
        mean = self.booster.predict(inputs.x, num_iteration=self.booster.best_iteration or None)
        if self.quantiles is None:
            return Forecast(mean=mean)
        lower, upper = (q.predict(inputs.x) for q in self.quantiles)
        return Forecast(mean=mean, lower=np.minimum(lower, upper), upper=np.maximum(lower, upper))


def _lightgbm(train: Inputs, budget: Budget, boosting: str) -> LightGBMModel:
    import lightgbm as lgb

    x, y, w = _recent(train, budget)
    fit, val = validation_split(len(y), train.horizon, budget.validation_fraction)
    early = boosting == "gbdt" and val.start < len(y)
    rounds = budget.boost_rounds if boosting == "gbdt" else min(budget.boost_rounds, DART_ROUNDS)
    data = lgb.Dataset(x[fit], y[fit], weight=w[fit], free_raw_data=False)
    kwargs = {}
    if early:
        kwargs["valid_sets"] = [lgb.Dataset(x[val], y[val], weight=w[val], reference=data)]
        kwargs["callbacks"] = [lgb.early_stopping(10 * budget.patience, verbose=False)]
    booster = lgb.train(_lightgbm_params(budget, boosting=boosting), data, num_boost_round=rounds, **kwargs)
    if boosting != "gbdt":
        return LightGBMModel(booster)
    # The interval: quantile objectives with as many rounds as the mean model earned.
    best = booster.best_iteration or rounds
    quantiles = tuple(
        lgb.train(
            _lightgbm_params(budget, objective="quantile", alpha=alpha),
            lgb.Dataset(x, y, weight=w),
            num_boost_round=best,
        )
        for alpha in INTERVAL
    )
    return LightGBMModel(booster, quantiles)


@register(
    "lightgbm",
    "tree",
    "tabular",
    "LightGBM gbdt with early stopping; 10-90% interval from quantile objectives.",
    **LIGHTGBM,
    interval=INTERVAL,
)
def lightgbm(train: Inputs, budget: Budget) -> LightGBMModel:
    return _lightgbm(train, budget, "gbdt")


@register(
    "lightgbm_dart",
    "tree",
    "tabular",
    "LightGBM with DART (dropout trees), a fixed number of rounds.",
    **LIGHTGBM,
    max_rounds=DART_ROUNDS,
)
def lightgbm_dart(train: Inputs, budget: Budget) -> LightGBMModel:
    return _lightgbm(train, budget, "dart")


@dataclass
class XGBoostModel:
    booster: Any
    rounds: int  # trees used: the best iteration's, when stopped early

    @property
    def params(self) -> dict:
        return {"best_iteration": self.rounds}

    def predict(self, inputs: Inputs) -> Forecast:
        import xgboost as xgb

        return Forecast(mean=self.booster.predict(xgb.DMatrix(inputs.x), iteration_range=(0, self.rounds)))


@register("xgboost", "tree", "tabular", "XGBoost (hist) with early stopping.", **XGBOOST)
def xgboost(train: Inputs, budget: Budget) -> XGBoostModel:
    import xgboost as xgb

    x, y, w = _recent(train, budget)
    fit, val = validation_split(len(y), train.horizon, budget.validation_fraction)
    params = {**XGBOOST, "seed": budget.seed, "verbosity": 0, **({"nthread": budget.threads} if budget.threads else {})}
    data = xgb.DMatrix(x[fit], y[fit], weight=w[fit])
    evals, stop = [], None
    if val.start < len(y):
        evals, stop = [(xgb.DMatrix(x[val], y[val], weight=w[val]), "validation")], 10 * budget.patience
    booster = xgb.train(
        params, data, num_boost_round=budget.boost_rounds, evals=evals, early_stopping_rounds=stop, verbose_eval=False
    )
    return XGBoostModel(booster, booster.best_iteration + 1 if stop else budget.boost_rounds)
