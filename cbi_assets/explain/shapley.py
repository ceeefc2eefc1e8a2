"""SHAP values of a fitted model's forecasts, and the drivers of each forecast.

Trees get exact TreeSHAP (shap's TreeExplainer, which runs LightGBM's and XGBoost's own C++ Tree
SHAP); a network over windows gets a sampled permutation estimate against a small background of
windows; a family that forecasts from the price path's own returns has no features to attribute,
and says so (`NoAttribution`) rather than inventing an attribution.

Every attribution is in forward log-return units and adds up: base + the row's SHAP values is the
model's forecast for that row, which `attribute` checks before handing it back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

# Rows per forward pass when a network is evaluated on masked windows (bounds memory).
CHUNK = 2048
# How closely base + SHAP must give the model's own forecast, relative to the forecasts' scale:
# XGBoost adds its float32 contributions in another order than its prediction does.
ADDITIVITY = 1e-4


class NoAttribution(ValueError):
    """The model has no feature inputs to attribute (a reference or statistical family)."""


@dataclass(frozen=True)
class Attribution:
    """SHAP values of some rows: `shap[i, j]` is feature j's contribution to row i's forecast."""

    shap: np.ndarray  # (rows, features)
    base: np.ndarray  # (rows,): the forecast with no feature known (the explainer's expected value)
    features: tuple[str, ...]
    method: str  # how it was computed, for a person reading the metadata

    @property
    def forecast(self) -> np.ndarray:
        return self.base + self.shap.sum(axis=1)


# --- What a model is ----------------------------------------------------------------------------


def tree_kind(model) -> str | None:
    """ "lightgbm" or "xgboost" for the tree families' fitted models (they hold a `booster`), else None."""
    booster = getattr(model, "booster", None)
    module = type(booster).__module__
    if module.startswith("lightgbm"):
        return "lightgbm"
    if module.startswith("xgboost"):
        return "xgboost"
    return None


def window_length(model) -> int | None:
    """The window length of a sequence network (a Keras model, or the SequenceNetwork holding one)."""
    network = getattr(model, "model", model)
    shape = getattr(network, "input_shape", None)
    return int(shape[1]) if isinstance(shape, tuple) and len(shape) == 3 else None


def no_attribution_reason(model) -> str | None:
    """Why a model has no feature attribution, or None when it has one."""
    if tree_kind(model) or window_length(model):
        return None
    name = type(model).__name__
    return (
        f"{name} forecasts from the price path's own returns (a reference or statistical family): it has no "
        "feature inputs to attribute, so no SHAP values are given"
    )


# --- Attributions -------------------------------------------------------------------------------


def tree_attribution(model, x: np.ndarray, features: tuple[str, ...]) -> Attribution:
    """Exact TreeSHAP of a LightGBM or XGBoost model on rows `x` (scaled as the model was trained).

    The trees used are the ones the model predicts with: LightGBM's best iteration when it stopped
    early (all trees otherwise, as for DART), XGBoost's `rounds`.
    """
    import shap

    kind = tree_kind(model)
    if kind is None:
        raise NoAttribution(no_attribution_reason(model))
    booster = model.booster
    limit = (booster.best_iteration or -1) if kind == "lightgbm" else model.rounds
    explainer = shap.TreeExplainer(booster)
    values = np.asarray(explainer.shap_values(np.asarray(x, dtype=np.float32), tree_limit=limit), dtype=np.float64)
    base = np.full(len(x), float(np.ravel(explainer.expected_value)[0]))
    return Attribution(values.reshape(len(x), -1), base, tuple(features), f"TreeSHAP ({kind}, exact)")


def window_predictor(model) -> Callable[[np.ndarray], np.ndarray]:
    """A function from windows (rows, length, features) to forecasts, for a Keras model or a
    SequenceNetwork, traced once so thousands of masked windows cost one graph."""
    from cbi_assets.models.registry import Inputs

    if hasattr(model, "predict") and hasattr(model, "centre"):  # a SequenceNetwork: its own scaled forward pass

        def network(w: np.ndarray) -> np.ndarray:
            ones = np.ones(len(w))
            return model.predict(Inputs(x=w, y=None, weight=ones, returns=np.zeros(len(w)), horizon=1, season=1)).mean

        return network

    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    forward = tf.function(lambda w: model(w, training=False), input_signature=[spec], autograph=False)

    def keras_model(w: np.ndarray) -> np.ndarray:
        out = [
            np.asarray(forward(np.ascontiguousarray(w[i : i + CHUNK], dtype=np.float32))).reshape(-1)
            for i in range(0, len(w), CHUNK)
        ]
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    return keras_model


def window_attribution(
    predict: Callable[[np.ndarray], np.ndarray],
    windows: np.ndarray,
    background: np.ndarray,
    features: tuple[str, ...],
    *,
    permutations: int = 1,
    seed: int = 7,
) -> Attribution:
    """Sampled Shapley values of a model over windows, one value per feature (its whole column).

    A feature is "unknown" when its column over the whole window is taken from a background window
    instead: the explained windows and the background are stacked into one pool and each sample
    is a row of pool indices, one per feature, which shap's PermutationExplainer masks like any
    tabular row. Antithetic permutations make the values exact for additive models and keep
    base + SHAP equal to the forecast for any model.
    """
    import shap

    rows, length, width = windows.shape
    if background.ndim != 3 or background.shape[1:] != (length, width) or len(background) == 0:
        raise ValueError(
            f"window_attribution: background of shape {background.shape} does not match windows "
            f"(rows, {length}, {width}); pass background windows cut like the explained ones"
        )
    if len(features) != width:
        raise ValueError(f"window_attribution: {len(features)} feature names for windows of {width} features")
    pool = np.concatenate([np.asarray(windows, np.float32), np.asarray(background, np.float32)])
    steps, columns = np.arange(length)[None, :, None], np.arange(width)[None, None, :]

    def model(codes: np.ndarray) -> np.ndarray:
        index = codes.astype(np.int64)
        return np.concatenate(
            [predict(pool[index[i : i + CHUNK, None, :], steps, columns]) for i in range(0, len(index), CHUNK)]
        )

    explained = np.repeat(np.arange(rows, dtype=np.float64)[:, None], width, axis=1)
    others = np.repeat(np.arange(rows, rows + len(background), dtype=np.float64)[:, None], width, axis=1)
    masker = shap.maskers.Independent(others, max_samples=len(others))
    explainer = shap.PermutationExplainer(model, masker, seed=seed)
    result = explainer(explained, max_evals=permutations * (2 * width + 1), silent=True)
    return Attribution(
        np.asarray(result.values, np.float64),
        np.asarray(result.base_values, np.float64).reshape(-1),
        tuple(features),
        f"permutation SHAP ({permutations} antithetic permutation(s), {len(background)} background windows)",
    )


def attribute(
    model, x: np.ndarray, features: tuple[str, ...], *, background: np.ndarray | None = None, permutations: int = 1
) -> Attribution:
    """SHAP values of `model` on `x`: rows (rows, features) for a tree, windows (rows, length,
    features) with background windows for a network. NoAttribution for a model without features.

    Checks that base + SHAP gives the model's own forecast of each row, so an explanation never
    describes another model than the one that forecasts (a wrong tree limit, misaligned columns).
    """
    reason = no_attribution_reason(model)
    if reason:
        raise NoAttribution(reason)
    if tree_kind(model):
        if x.ndim != 2:
            raise ValueError(f"a tree model explains rows (rows, features); got x of shape {x.shape}")
        found = tree_attribution(model, x, features)
        from cbi_assets.models.registry import Inputs

        n = len(x)
        forecast = model.predict(Inputs(x=x, y=None, weight=np.ones(n), returns=np.zeros(n), horizon=1, season=1)).mean
    else:
        if background is None:
            raise ValueError(
                "a sequence network is explained against background windows: pass `background` "
                "(windows from the training rows, scaled and cut like `x`)"
            )
        predict = window_predictor(model)
        found = window_attribution(predict, x, background, features, permutations=permutations)
        forecast = predict(x)
    scale = max(float(np.max(np.abs(forecast), initial=0.0)), 1e-12)
    gap = float(np.max(np.abs(found.forecast - forecast), initial=0.0))
    if gap > ADDITIVITY * scale:
        raise ValueError(
            f"{found.method}: base + SHAP differs from the model's forecast by {gap:.3g} (forecasts up "
            f"to {scale:.3g}); the explained inputs do not match the model"
        )
    return found


# --- Drivers ------------------------------------------------------------------------------------

DRIVER_SCHEMA = {
    "row": pl.Int64,
    "rank": pl.Int32,
    "feature": pl.String,
    "value": pl.Float64,
    "shap": pl.Float64,
    "sign": pl.Int8,
}


def drivers(attribution: Attribution, values: np.ndarray, k: int) -> pl.DataFrame:
    """The k features that moved each row's forecast most (largest |SHAP| first): row, rank, feature,
    value (as given in `values`, e.g. the unscaled feature), shap, sign (+1 up, -1 down).

    A feature that did not move the forecast at all is no driver, so a row may have fewer than k.
    """
    if k < 1:
        raise ValueError(f"drivers: k={k}; ask for at least one driver")
    shap = attribution.shap
    if values.shape != shap.shape:
        raise ValueError(f"drivers: values of shape {values.shape} for SHAP values of shape {shap.shape}")
    k = min(k, shap.shape[1])
    order = np.argsort(-np.abs(shap), axis=1, kind="stable")[:, :k]
    rows = np.repeat(np.arange(len(shap)), k)
    columns = order.reshape(-1)
    contribution = shap[rows, columns]
    frame = pl.DataFrame(
        {
            "row": rows,
            "rank": np.tile(np.arange(1, k + 1), len(shap)),
            "feature": np.asarray(attribution.features, dtype=object)[columns].tolist(),
            "value": values[rows, columns].astype(np.float64),
            "shap": contribution,
            "sign": np.sign(contribution).astype(np.int8),
        },
        schema=DRIVER_SCHEMA,
    )
    return frame.filter(pl.col("shap") != 0).with_columns(pl.col("value").fill_nan(None))


def top_drivers(
    model,
    x_row: np.ndarray,
    feature_names,
    k: int = 5,
    *,
    background: np.ndarray | None = None,
    values: np.ndarray | None = None,
) -> pl.DataFrame:
    """The top k drivers of one forecast: rank, feature, value, shap, sign.

    `x_row` is the model's input for the forecast origin, scaled as it was trained: a row of features
    for a tree, a window (length, features) for a network (then `background` windows are needed).
    `values` are the values to show beside each feature (default: `x_row`, or the window's last
    step). Raises NoAttribution, with the reason, for a model without features.
    """
    x = np.asarray(x_row, dtype=np.float32)[None]
    found = attribute(model, x, tuple(feature_names), background=background)
    shown = np.asarray(values if values is not None else x[0] if x.ndim == 2 else x[0, -1], dtype=np.float64)
    return drivers(found, shown.reshape(1, -1), k).drop("row")


def long_format(attribution: Attribution, values: np.ndarray) -> pl.DataFrame:
    """Every feature of every row: row, feature, value, shap (the per-forecast SHAP table)."""
    rows, width = attribution.shap.shape
    return pl.DataFrame(
        {
            "row": np.repeat(np.arange(rows), width),
            "feature": list(attribution.features) * rows,
            "value": np.asarray(values, dtype=np.float64).reshape(-1),
            "shap": attribution.shap.reshape(-1),
        },
        schema={"row": pl.Int64, "feature": pl.String, "value": pl.Float64, "shap": pl.Float64},
    ).with_columns(pl.col("value").fill_nan(None))
