"""Cross-asset transfer: an encoder of the shared layer pre-trained on both markets, with a head per
asset on the encoder's output and the asset's own features, against the same network trained on
the asset alone.

Both markets read the same shared-layer columns (macro, volatility, FX, cross-asset), so a
representation learned from ZL's and MES's outcomes together may serve each better than one
learned from its own history. The comparison holds the network fixed: the asset-only model is the
same encoder and head trained end to end on the asset's rows, with the same budget; the transfer
model's encoder was pre-trained on both assets' rows and stays frozen while its head is fitted.

A horizon is paired across the markets by its length in sessions (ZL 1w and MES 7d are both 5),
so each pair is one forecasting problem in two markets. The held-out test is the last part of the
two markets' common history; every model, the pre-training included, fits only rows whose labels
ended before it (purge), and every scaler only those rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from cbi_assets.catalogue import MES, ZL, Market, market
from cbi_assets.meta.budget import MetaBudget
from cbi_assets.meta.networks import Trainer, clean, fresh_session
from cbi_assets.meta.scores import SHOWN, scores
from cbi_assets.models.inputs import SESSIONS_PER_YEAR
from cbi_assets.training.scaling import RobustScaler
from cbi_assets.training.sets import feature_columns

TRANSFER_MARKETS = (ZL, MES)
MODELS = ("transfer", "asset_only", "random_walk")
SHARED_LAYER = "shared/"  # the catalogue layer of every shared-layer feature starts so


@dataclass(frozen=True)
class Pair:
    """A ZL and an MES daily horizon of the same length in sessions."""

    zl: str
    mes: str
    bars: int

    @property
    def name(self) -> str:
        return f"{self.zl}_{self.mes}"

    def horizon(self, market_: Market | str) -> str:
        return self.zl if market(market_) == ZL else self.mes


def horizon_pairs() -> list[Pair]:
    """Every ZL horizon with the MES daily horizon of the same length (from the catalogue)."""
    mes = {h.bars: h.name for h in MES.daily_horizons}
    return [Pair(h.name, mes[h.bars], h.bars) for h in ZL.daily_horizons if h.bars in mes]


def column_roles(
    catalogues: dict[str, pl.DataFrame], frames: dict[str, pl.DataFrame]
) -> tuple[list[str], dict[str, list[str]]]:
    """(shared columns, each asset's own columns): the shared-layer features every asset's catalogue
    and training set carry (in ZL's order), and the rest of each training set's features."""
    shared_sets = []
    for asset, catalogue in catalogues.items():
        names = set(catalogue.filter(pl.col("layer").str.starts_with(SHARED_LAYER))["name"])
        shared_sets.append(names & set(feature_columns(frames[asset])))
    common = set.intersection(*shared_sets) if shared_sets else set()
    first = next(iter(frames))
    shared = [c for c in feature_columns(frames[first]) if c in common]
    own = {asset: [c for c in feature_columns(frame) if c not in common] for asset, frame in frames.items()}
    return shared, own


def split_date(frames: dict[str, pl.DataFrame], test_fraction: float) -> dt.date:
    """The first test session: the last `test_fraction` of the sessions both markets' sets cover."""
    first = max(f["date"].min() for f in frames.values())
    last = min(f["date"].max() for f in frames.values())
    days = pl.concat([f.select("date") for f in frames.values()]).filter(pl.col("date").is_between(first, last))
    days = days.unique().sort("date")["date"]
    if days.len() < 20:
        raise ValueError(
            f"the training sets share {days.len()} sessions ({first} to {last}); a held-out split needs "
            "at least 20: rebuild both markets' training sets over a common history"
        )
    return days[min(days.len() - 1, int(days.len() * (1 - test_fraction)))]


@dataclass(frozen=True)
class Side:
    """One asset's rows as arrays: scaled shared and own features, the label and the prices."""

    shared: np.ndarray
    own: np.ndarray
    y: np.ndarray
    price: np.ndarray  # at each row's origin
    forward_price: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.y)

    def tail(self, rows: int | None) -> Side:
        if rows is None or rows >= self.rows:
            return self
        return Side(*(a[-rows:] for a in (self.shared, self.own, self.y, self.price, self.forward_price)))


def _scaled(frame: pl.DataFrame, scaler: RobustScaler) -> np.ndarray:
    if not scaler.columns:
        return np.zeros((frame.height, 0), np.float32)
    x = frame.select(scaler.columns).to_numpy().astype(np.float64)
    return clean((x - np.asarray(scaler.median)) / np.asarray(scaler.scale))


def sides(
    frames: dict[str, pl.DataFrame],
    shared: list[str],
    own: dict[str, list[str]],
    split: dt.date,
    max_train_rows: int | None,
) -> tuple[dict[str, Side], dict[str, Side]]:
    """(train, test) arrays per asset. Training rows are those whose label ended before the split
    (the most recent `max_train_rows`); test rows start at it. Scalers see training rows only: the
    shared one both assets' training rows, each own one its asset's."""
    train_frames = {
        a: f.filter(pl.col("label_end") < split).tail(max_train_rows or f.height) for a, f in frames.items()
    }
    test_frames = {a: f.filter(pl.col("date") >= split) for a, f in frames.items()}
    for asset, part in (*train_frames.items(), *test_frames.items()):
        if part.height < 10:
            raise ValueError(
                f"{asset}: {part.height} rows on one side of the {split} split; the transfer comparison "
                "needs labelled history on both sides (rebuild the training set, or lower test_fraction)"
            )
    shared_scaler = RobustScaler.fit(pl.concat([f.select(shared) for f in train_frames.values()]), shared)
    out = []
    for part in (train_frames, test_frames):
        side = {}
        for asset, frame in part.items():
            scaler = RobustScaler.fit(train_frames[asset], own[asset])
            y = frame["forward_return"].to_numpy().astype(np.float64)
            forward_price = frame["forward_price"].to_numpy().astype(np.float64)
            side[asset] = Side(
                _scaled(frame, shared_scaler), _scaled(frame, scaler), y, forward_price * np.exp(-y), forward_price
            )
        out.append(side)
    return out[0], out[1]


# --- The networks -----------------------------------------------------------------------------------


def _encoder(keras, shared: int, budget: MetaBudget):
    inputs = keras.Input((shared,), name="shared_features")
    h = keras.layers.Dense(budget.encoder_units, activation="relu", name="encode")(inputs)
    z = keras.layers.Dense(budget.latent, activation="relu", name="latent")(h)
    return keras.Model(inputs, z, name="encoder")


def pretraining_network(shared: int, assets: int, budget: MetaBudget):
    """The encoder with one linear output per asset: learns from every asset's outcomes at once."""
    import keras

    shared_in = keras.Input((shared,), name="shared")
    z = _encoder(keras, shared, budget)(shared_in)
    out = keras.layers.Dense(assets, kernel_initializer="zeros", name="forward_returns")(z)
    return keras.Model(shared_in, out, name="pretraining")


def head_network(shared: int, own: int, budget: MetaBudget):
    """Encoder output and the asset's own features -> the forward return (transfer and asset-only alike)."""
    import keras

    shared_in, own_in = keras.Input((shared,), name="shared"), keras.Input((own,), name="own")
    z = _encoder(keras, shared, budget)(shared_in)
    h = keras.layers.Concatenate(name="encoded_and_own")([z, own_in])
    h = keras.layers.Dense(budget.head_units, activation="relu", name="head")(h)
    out = keras.layers.Dense(1, kernel_initializer="zeros", name="forward_return")(h)
    return keras.Model([shared_in, own_in], out, name="asset_head")


_TRAINERS: dict[tuple, Trainer] = {}


def _trainer(kind: str, dims: tuple[int, ...], budget: MetaBudget) -> Trainer:
    """The process's trainer of one network shape, at its seeded initial state."""
    key = (kind, dims, budget.encoder_units, budget.latent, budget.head_units, budget.transfer_lr, budget.seed)
    if key not in _TRAINERS:
        if not _TRAINERS:
            fresh_session(budget.seed)
        import keras

        keras.utils.set_random_seed(budget.seed)
        build = pretraining_network if kind == "pretraining" else head_network
        _TRAINERS[key] = Trainer(build(*dims, budget), budget.transfer_lr)
    trainer = _TRAINERS[key]
    trainer.reset()
    return trainer


def _fit_kwargs(budget: MetaBudget, bars: int, seed: int, rows: int) -> dict:
    # At least 8 steps an epoch: a few hundred rows in one full batch would hardly move in a budget of epochs.
    batch = max(16, min(budget.transfer_batch, rows // 8))
    return {
        "epochs": budget.transfer_epochs,
        "batch_size": batch,
        "patience": budget.transfer_patience,
        "horizon": bars,
        "validation_fraction": budget.validation_fraction,
        "seed": seed,
    }


def pretrain(train: dict[str, Side], scale: dict[str, float], budget: MetaBudget, bars: int) -> tuple[list, dict]:
    """The encoder's weights after learning every asset's (scaled) forward return from the shared
    layer, and what the training did. The assets' rows are interleaved from their ends, so the
    validation tail holds the latest rows of each and its purge spans `bars` rows of each."""
    assets = list(train)
    shared = np.concatenate([train[a].shared for a in assets])
    order = np.argsort(np.concatenate([np.arange(train[a].rows) - train[a].rows for a in assets]), kind="stable")
    y = np.zeros((len(shared), len(assets)), np.float32)
    mask = np.zeros_like(y)
    start = 0
    for k, asset in enumerate(assets):
        rows = slice(start, start + train[asset].rows)
        y[rows, k], mask[rows, k] = train[asset].y / scale[asset], 1.0
        start = rows.stop
    trainer = _trainer("pretraining", (shared.shape[1], len(assets)), budget)
    info = trainer.fit(
        [shared[order]], y[order], mask[order], **_fit_kwargs(budget, bars * len(assets), budget.seed, len(y))
    )
    return trainer.model.get_layer("encoder").get_weights(), info


def fit_head(side: Side, scale: float, budget: MetaBudget, bars: int, encoder: list | None) -> tuple[Trainer, dict]:
    """Train the head network on one asset's rows: with the pre-trained `encoder` weights frozen
    (transfer), or all of it from its initial weights (asset-only). Returns the trainer, holding the
    fitted weights until its next reset, and what the training did."""
    trainer = _trainer("head", (side.shared.shape[1], side.own.shape[1]), budget)
    frozen = ()
    if encoder is not None:
        layer = trainer.model.get_layer("encoder")
        layer.set_weights(encoder)
        frozen = layer.trainable_variables
    info = trainer.fit(
        [side.shared, side.own], side.y / scale, frozen=frozen, **_fit_kwargs(budget, bars, budget.seed, side.rows)
    )
    return trainer, info


def compare(
    train: dict[str, Side],
    test: dict[str, Side],
    budget: MetaBudget,
    bars: int,
    log: Callable[[str], None] | None = None,
    forecast: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Transfer against asset-only against the random walk on the test rows of each asset (of those in
    `forecast`): a row per asset and model with the SHOWN metrics, the rows trained and tested on and
    the best epoch."""
    scale = {a: _scale(s.y) for a, s in train.items()}
    encoder, pre = pretrain(train, scale, budget, bars)
    rows = []
    for asset, side in train.items():
        if forecast is not None and asset not in forecast:
            continue
        held = test[asset]
        found = {"random_walk": (np.zeros(held.rows), {"epochs_run": 0, "best_epoch": 0})}
        for model, weights in (("transfer", encoder), ("asset_only", None)):
            trainer, info = fit_head(side, scale[asset], budget, bars, weights)
            found[model] = (trainer.predict([held.shared, held.own]) * scale[asset], info)
        for model in MODELS:
            predicted, info = found[model]
            values = scores(
                held.y,
                predicted,
                held.price,
                held.forward_price,
                horizon=bars,
                periods_per_year=SESSIONS_PER_YEAR,
                cost_bps=market(asset).cost_bps,
            )
            rows.append(
                {
                    "asset": asset,
                    "model": model,
                    "train_rows": side.rows,
                    "test_rows": held.rows,
                    "pretrain_rows": sum(s.rows for s in train.values()),
                    "epochs": info["best_epoch"],
                    **{m: values[m] for m in SHOWN},
                }
            )
        if log:
            by = {r["model"]: r for r in rows[-len(MODELS) :]}
            log(
                f"{asset}: test MSE {by['transfer']['mse_vs_rw']:.3f} (transfer) and "
                f"{by['asset_only']['mse_vs_rw']:.3f} (asset-only) x the random walk's; pre-training stopped at "
                f"epoch {pre['best_epoch']}"
            )
    return pl.DataFrame(rows)


def _scale(y: np.ndarray) -> float:
    scale = float(np.std(y)) if len(y) > 1 else 0.0
    return scale if np.isfinite(scale) and scale > 0 else 1.0


def transfer_comparison(
    frames: dict[str, pl.DataFrame],
    catalogues: dict[str, pl.DataFrame],
    pair: Pair,
    budget: MetaBudget,
    log: Callable[[str], None] | None = None,
) -> pl.DataFrame:
    """The comparison of one horizon pair, in two scenarios: every pre-split row (`all`), and `few`
    rows of the asset being forecast (its last `budget.few_rows` before the split, the other asset's
    history whole), where borrowing from the other market should matter most. The feature scalers
    are the same in both: fitted on every pre-split row's features, never on a label."""
    shared, own = column_roles(catalogues, frames)
    if not shared:
        raise ValueError("the training sets share no shared-layer feature; rebuild both markets' master features")
    split = split_date(frames, budget.test_fraction)
    train, test = sides(frames, shared, own, split, budget.max_train_rows)
    parts = [compare(train, test, budget, pair.bars, log).with_columns(pl.lit("all").alias("scenario"))]
    for asset in train:
        few = {a: s.tail(budget.few_rows) if a == asset else s for a, s in train.items()}
        found = compare(few, test, budget, pair.bars, forecast=[asset])
        parts.append(found.with_columns(pl.lit("few").alias("scenario")))
    return (
        pl.concat(parts)
        .with_columns(
            pl.lit(pair.name).alias("pair"),
            pl.lit(str(split)).alias("test_start"),
            pl.lit(len(shared)).alias("shared_features"),
            pl.col("asset")
            .replace_strict({a: len(c) for a, c in own.items()}, return_dtype=pl.Int64)
            .alias("own_features"),
            pl.col("asset").replace_strict({a: pair.horizon(a) for a in own}).alias("horizon"),
        )
        .select(
            "pair",
            "asset",
            "horizon",
            "scenario",
            "model",
            *SHOWN,
            "train_rows",
            "pretrain_rows",
            "test_rows",
            "epochs",
            "shared_features",
            "own_features",
            "test_start",
        )
    )
