"""The model registry: every family registers once and is then trained for every market x horizon.

A family is a `fit` function: given one fold's training `Inputs` and the profile's `Budget`, it
returns a fitted model whose `predict(Inputs)` gives a `Forecast` of the forward log return of
each row (the price forecast is derived from it). Adapters cut each family's input from the one
training set: 2-D rows for tabular families, 3-D windows for sequence networks, and the one-step
return series for statistical families that model the price path itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

Kind = Literal["reference", "statistical", "tree", "neural"]
Shape = Literal["tabular", "sequence", "series"]
KINDS: tuple[Kind, ...] = ("reference", "statistical", "tree", "neural")


@dataclass(frozen=True)
class Inputs:
    """One slice of a training set (a fold's training rows, or its test rows), ready for a family.

    x:        features of each row (a forecast origin), robust-scaled by the fold's scaler:
              (rows, features) for tabular families, (rows, sequence, features) for sequence ones,
              where window i ends at row i. Float32.
    y:        the forward log return over the horizon (the label); None when predicting.
    weight:   sample weight of each row (regime weight x label uniqueness).
    returns:  one-step log returns of the row timeframe, each known at its row's close, from the
              first training row up to the last row of this slice. The slice's own rows are the
              last `rows` entries; earlier entries are history (for test rows: the training window
              and the purge/embargo gap).
    horizon:  rows the label reaches ahead (a daily 1w label: 5; an intraday label: 1 bar).
    season:   rows in one season of the row timeframe (a year of sessions, or one session).
    """

    x: np.ndarray
    y: np.ndarray | None
    weight: np.ndarray
    returns: np.ndarray
    horizon: int
    season: int
    feature_names: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class Forecast:
    """A family's forecast for each row: the forward log return, optionally with a 10-90% interval
    (`lower`, `upper`) and a volatility forecast (`sigma`, the standard deviation of the return)."""

    mean: np.ndarray
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    sigma: np.ndarray | None = None


class Fitted(Protocol):
    def predict(self, inputs: Inputs) -> Forecast: ...


@dataclass(frozen=True)
class Budget:
    """How much training a profile allows each family per fold."""

    epochs: int  # neural networks, before early stopping
    patience: int  # epochs (or tens of boosting rounds) without improvement before stopping
    boost_rounds: int  # trees, before early stopping
    sequence_length: int  # rows in a sequence network's window
    batch_size: int
    max_train_rows: int | None  # the most recent rows a fold trains on (None: all)
    validation_fraction: float = 0.2  # the tail of the training window used for early stopping
    seed: int = 7
    # Threads per model; None lets the library take every core. Two model steps run side by side
    # on a small machine, and OpenMP libraries that each take every core spin against each other
    # (LightGBM DART measured 30x slower on 2 busy cores with 2 threads than with 1).
    threads: int | None = None


@dataclass(frozen=True)
class Family:
    name: str
    kind: Kind
    shape: Shape
    fit: Callable[[Inputs, Budget], Fitted]
    description: str
    params: dict[str, Any] = field(default_factory=dict)  # its hyperparameters, as MLflow records them


FAMILIES: dict[str, Family] = {}


def register(name: str, kind: Kind, shape: Shape, description: str, **params: Any):
    """Register a fit function as a model family (decorator). The name is unique."""

    def add(fit: Callable[[Inputs, Budget], Fitted]) -> Callable[[Inputs, Budget], Fitted]:
        if name in FAMILIES:
            raise ValueError(f"model family {name!r} is registered twice")
        if kind not in KINDS:
            raise ValueError(f"model family {name!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
        FAMILIES[name] = Family(name, kind, shape, fit, description, params)
        return fit

    return add


def families(kind: Kind | None = None) -> list[Family]:
    """Registered families, of one kind or all: references first, then by kind and registration."""
    import cbi_assets.models.families  # noqa: F401  (registers every family)

    chosen = [f for f in FAMILIES.values() if kind is None or f.kind == kind]
    return sorted(chosen, key=lambda f: KINDS.index(f.kind))


# --- Helpers the families share -----------------------------------------------------------------


def validation_split(rows: int, horizon: int, fraction: float) -> tuple[slice, slice]:
    """(fit, validation) slices of a training window for early stopping: the validation part is its
    tail, and the `horizon` rows before it are dropped so no fit label reaches into it."""
    n_val = max(1, int(rows * fraction))
    fit_end = rows - n_val - horizon
    if fit_end < 2:
        return slice(0, rows), slice(rows, rows)  # too short to hold out: no early stopping
    return slice(0, fit_end), slice(rows - n_val, rows)


def windows(x: np.ndarray, length: int) -> np.ndarray:
    """(rows, length, features) windows of a (rows, features) matrix, window i ending at row i.

    The first rows lack a full history and repeat their first row (the padding a network sees at
    the start of any series); a strided view, so it costs no copy until the network reads it.
    """
    pad = np.repeat(x[:1], length - 1, axis=0)
    padded = np.concatenate([pad, x]) if len(x) else x
    return np.lib.stride_tricks.sliding_window_view(padded, length, axis=0).transpose(0, 2, 1)


@dataclass(frozen=True)
class Trained:
    """What `train_epochs` did: epochs run, the best validation epoch (0: the starting weights), its
    loss and weights (NaN and the last weights without a validation set)."""

    epochs_run: int
    best_epoch: int
    best_loss: float
    best_weights: Any


def train_epochs(
    rows: int,
    epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    step: Callable[[np.ndarray], None],
    val_loss: Callable[[], float] | None,
    weights: Callable[[], Any],
) -> Trained:
    """Shuffled mini-batch epochs over `rows` training rows (`step` trains on a batch's row indices, in
    time order), stopped when `val_loss` has not improved for `patience` epochs. The caller restores
    `best_weights`; the starting network is epoch 0, so one that never beats it is given back as is."""
    rng = np.random.default_rng(seed)
    best = val_loss() if val_loss else float("nan")
    best_epoch, best_weights, waited, run = 0, weights(), 0, 0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(rows)
        for start in range(0, len(order), batch_size):
            step(np.sort(order[start : start + batch_size]))
        run = epoch
        if val_loss is None:
            continue
        loss = val_loss()
        if loss < best:
            best, best_epoch, best_weights, waited = loss, epoch, weights(), 0
        else:
            waited += 1
            if waited >= patience:
                break
    return Trained(run, best_epoch if val_loss else run, best, best_weights)
