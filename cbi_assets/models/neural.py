"""Sequence networks (Keras): LSTM, GRU, TCN, CNN-LSTM and self-attention over each row's window.

Every family reads the same (rows, sequence, features) windows and learns the forward log return,
scaled to unit standard deviation inside the fit. The networks are deliberately small: the sample
profile trains 5 families x 5 folds x 17 horizons on 2 CPU cores.

The training loop is a short one of our own (one traced train step, early stopping on the
validation tail) rather than `Model.fit`: on the sample's 2,000 rows `fit` spends about twice as
long in its data pipeline and in tracing separate train, evaluate and predict functions (and
retraces for the last, short batch) as the whole training takes here.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cbi_assets.models.device import training_device
from cbi_assets.models.inputs import CLIP
from cbi_assets.models.registry import (
    Budget,
    Forecast,
    Inputs,
    register,
    train_epochs,
    validation_split,
)

LEARNING_RATE = 2e-3
HUBER_DELTA = 1.0  # in standard deviations of the target: the fat tails weigh linearly, not squared
PREDICT_CHUNK = 4096  # rows per forward pass when predicting (bounds memory on long test windows)


# --- Architectures ------------------------------------------------------------------------------
# Each builder takes the window shape and the dtype policy and returns a Keras model from one
# window to one number (the scaled forward return). The output layer is float32 under mixed
# precision, and starts at zero so an untrained network forecasts the training mean.


def _stem(keras, length: int, features: int):
    from keras import ops

    inputs = keras.Input((length, features), name="window")
    # The inputs are clipped already; the stem clips again so that the saved .keras model does too
    # (a missing value, NaN, becomes the median, 0).
    clean = ops.clip(ops.nan_to_num(inputs, nan=0.0, posinf=CLIP, neginf=-CLIP), -CLIP, CLIP)
    return inputs, clean


def _head(keras, inputs, last, name: str):
    out = keras.layers.Dense(1, dtype="float32", kernel_initializer="zeros", name="forward_return")(last)
    return keras.Model(inputs, out, name=name)


def _recurrent(cell: str):
    def build(keras, length, features, dtype, units, layers):
        inputs, h = _stem(keras, length, features)
        for i in range(layers):
            h = getattr(keras.layers, cell)(units, return_sequences=i < layers - 1, dtype=dtype)(h)
        return _head(keras, inputs, h, cell.lower())

    return build


def _tcn(keras, length, features, dtype, units, layers, kernel):
    # Block i is dilated 2**i: four blocks of kernel 3 see 1 + 2 * (1 + 2 + 4 + 8) = 31 steps.
    inputs, h = _stem(keras, length, features)
    h = keras.layers.Conv1D(units, 1, dtype=dtype)(h)  # to the residual width
    for i in range(layers):
        branch = keras.layers.Conv1D(
            units, kernel, padding="causal", dilation_rate=2**i, activation="relu", dtype=dtype
        )(h)
        h = keras.layers.Add(dtype=dtype)([h, branch])
    return _head(keras, inputs, h[:, -1, :], "tcn")


def _cnn_lstm(keras, length, features, dtype, units, layers, kernel):
    inputs, h = _stem(keras, length, features)
    for _ in range(layers):
        h = keras.layers.Conv1D(units, kernel, padding="causal", activation="relu", dtype=dtype)(h)
    h = keras.layers.LSTM(units, dtype=dtype)(h)
    return _head(keras, inputs, h, "cnn_lstm")


def _attention(keras, length, features, dtype, units, layers, heads):
    from keras import ops

    inputs, h = _stem(keras, length, features)
    # Attention alone ignores order, so each step gets a learned embedding of its position.
    position = ops.cast(ops.cumsum(ops.ones_like(h[:, :, 0]), axis=1) - 1.0, "int32")
    h = keras.layers.Dense(units, dtype=dtype)(h) + keras.layers.Embedding(length, units, dtype=dtype)(position)
    for _ in range(layers):
        attended = keras.layers.MultiHeadAttention(heads, units // heads, dtype=dtype)(h, h)
        h = keras.layers.LayerNormalization(dtype=dtype)(h + attended)
    return _head(keras, inputs, h[:, -1, :], "attention")


# --- The fitted network ---------------------------------------------------------------------------


@dataclass(eq=False)
class SequenceNetwork:
    """A trained network and the target scale it learned in. Picklable (Keras models pickle as
    their .keras archive); `save` writes a .keras model that maps windows to forward log returns."""

    model: Any  # keras.Model: window -> scaled forward return
    centre: float  # the training mean of the forward return
    scale: float  # its training standard deviation
    params: dict
    device: dict
    weights: list | None = field(default=None, repr=False)  # its own: the network object is reused by the next fold
    _forward: Callable | None = field(default=None, repr=False)

    def _activate(self) -> None:
        """Load this network's weights into the Keras model, which a later fold may have retrained
        (about a millisecond for these small networks)."""
        if self.weights is not None:
            self.model.set_weights(self.weights)

    def predict(self, inputs: Inputs) -> Forecast:
        x = inputs.x
        expected = tuple(self.model.input_shape[1:])
        if x.ndim != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{self.model.name}: predicting on x of shape {x.shape}, but the network was trained on "
                f"(rows, {expected[0]}, {expected[1]}) windows; cut the test rows with the training "
                "set's sequence length and feature columns"
            )
        self._activate()
        if self._forward is None:
            self._forward = _traced_forward(self.model)
        mean = _forward_all(self._forward, x).astype(np.float64) * self.scale + self.centre
        return Forecast(mean=mean)

    def exported(self):
        """The network as one Keras model from windows to forward log returns: the target scale is
        folded into a last layer (what `save` writes, and MLflow's Keras flavour logs)."""
        import keras

        self._activate()
        inputs = keras.Input(self.model.input_shape[1:], name="window")
        scaled = self.model(inputs)
        out = keras.layers.Rescaling(self.scale, offset=self.centre, dtype="float32", name="forward_log_return")(scaled)
        return keras.Model(inputs, out, name=self.model.name)

    def save(self, path: str | Path) -> Path:
        """Write the network, with the target scale folded into a last layer, as a .keras file."""
        path = Path(path)
        if path.suffix != ".keras":
            raise ValueError(f"{self.model.name}: save path {path} must end in .keras (the Keras archive format)")
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():  # Keras 3 saving trips NumPy 2's copy-keyword deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            self.exported().save(path)
        return path

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_forward"] = None  # a traced function does not pickle; it is rebuilt on first predict
        return state


def _traced_forward(model):
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    return tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)


def _forward_all(forward, x: np.ndarray) -> np.ndarray:
    out = [
        np.asarray(forward(np.ascontiguousarray(x[i : i + PREDICT_CHUNK], dtype=np.float32)))
        for i in range(0, len(x), PREDICT_CHUNK)
    ]
    return np.concatenate(out)[:, 0] if out else np.zeros(0, np.float32)


# --- Training -------------------------------------------------------------------------------------


def _weights(w: np.ndarray) -> np.ndarray:
    """Sample weights with mean 1, so a batch's loss keeps the scale of an unweighted one."""
    w = np.nan_to_num(np.asarray(w, dtype=np.float64), nan=0.0).clip(min=0.0)
    total = w.mean() if w.size else 0.0
    return (w / total if total > 0 else np.ones_like(w)).astype(np.float32)


def _huber(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    err = np.abs(y - p)
    loss = np.where(err <= HUBER_DELTA, 0.5 * err**2, HUBER_DELTA * (err - 0.5 * HUBER_DELTA))
    return float(np.mean(w * loss))


@dataclass(eq=False)
class _Trainer:
    """A built network with its optimizer and traced train and forward steps, at its initial state."""

    key: tuple
    model: Any
    optimizer: Any
    step: Callable
    forward: Callable
    initial: list  # the network's freshly initialised weights
    initial_optimizer: list  # the optimizer's initial variables (step count, moments, loss scale)

    def reset(self) -> None:
        self.model.set_weights(self.initial)
        for variable, value in zip(self.optimizer.variables, self.initial_optimizer, strict=True):
            variable.assign(value)


# The trainers kept per process, one per family and window shape: horizons of one timeframe share
# their windows' shape, so each family is built and traced once for all of them.
_TRAINERS: dict[tuple, _Trainer] = {}
KEPT_TRAINERS = 5


def _trainer(name: str, build: Callable, shape: tuple, device: dict, seed: int, arch: dict) -> _Trainer:
    """The network of a family for windows of `shape`, reset to the weights a fresh build with
    `seed` gives. Folds and horizons share it: building and tracing a network costs about 0.5 s,
    more than training it on the sample, and a reset network trains exactly as a new one would.
    A new shape beyond KEPT_TRAINERS clears the Keras session and builds anew."""
    import keras
    import tensorflow as tf

    key = (name, tuple(shape), device["policy"], seed, tuple(sorted(arch.items())))
    if key in _TRAINERS:
        _TRAINERS[key].reset()
        keras.utils.set_random_seed(seed)
        return _TRAINERS[key]
    if len(_TRAINERS) >= KEPT_TRAINERS:
        _TRAINERS.clear()
        keras.backend.clear_session(free_memory=False)  # its garbage collection costs ~0.3 s
    keras.utils.set_random_seed(seed)
    length, features = shape
    model = build(keras, length, features, device["policy"], **arch)
    optimizer = keras.optimizers.Adam(LEARNING_RATE, global_clipnorm=1.0)
    if device["mixed_precision"]:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)  # float16 gradients would underflow
    optimizer.build(model.trainable_variables)

    spec = tf.TensorSpec((None, length, features), tf.float32)
    vector = tf.TensorSpec((None,), tf.float32)

    @tf.function(input_signature=[spec, vector, vector], autograph=False)
    def step(xb, yb, wb):
        with tf.GradientTape() as tape:
            pred = model(xb, training=True)
            loss = tf.reduce_mean(wb * keras.losses.huber(yb[:, None], pred, delta=HUBER_DELTA))
            scaled = optimizer.scale_loss(loss)  # inside the tape, or the loss scale has no gradient
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    trainer = _Trainer(
        key,
        model,
        optimizer,
        step,
        _traced_forward(model),
        model.get_weights(),
        [v.numpy() for v in optimizer.variables],
    )
    _TRAINERS[key] = trainer
    return trainer


def train(name: str, build: Callable, inputs: Inputs, budget: Budget, **arch: Any) -> SequenceNetwork:
    """Train one network on a fold's training windows, stopping early on the validation tail."""
    started = time.perf_counter()
    x, y = inputs.x, inputs.y
    if y is None:
        raise ValueError(f"{name}: the training Inputs carry no labels (y is None)")
    if x.ndim != 3:
        raise ValueError(
            f"{name}: Inputs.x has shape {x.shape}; sequence families take (rows, sequence, features) "
            "windows, cut with registry.windows(x, budget.sequence_length)"
        )
    if not (len(x) == len(y) == len(inputs.weight)) or len(x) == 0:
        raise ValueError(
            f"{name}: {len(x)} windows, {len(y)} labels and {len(inputs.weight)} weights; "
            "they must be the same, non-zero number of rows"
        )
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise ValueError(
            f"{name}: {bad.size} labels are NaN or infinite (first at training row {bad[0]}); "
            "the training set should keep labelled rows only"
        )

    keep = slice(-budget.max_train_rows, None) if budget.max_train_rows else slice(None)
    x, y, w = np.asarray(x[keep], np.float32), np.asarray(y[keep], np.float64), np.asarray(inputs.weight[keep])
    fit_rows, val_rows = validation_split(len(x), inputs.horizon, budget.validation_fraction)
    centre = float(np.mean(y[fit_rows]))
    scale = float(np.std(y[fit_rows]))
    scale = scale if np.isfinite(scale) and scale > 0 else 1.0
    target = ((y - centre) / scale).astype(np.float32)
    x_fit, y_fit, w_fit = x[fit_rows], target[fit_rows], _weights(w[fit_rows])
    x_val, y_val, w_val = x[val_rows], target[val_rows], _weights(w[val_rows])

    device = training_device()
    trainer = _trainer(name, build, x.shape[1:], device, budget.seed, arch)
    model, step = trainer.model, trainer.step

    forward = trainer.forward
    validating = len(x_val) > 0

    def val_loss() -> float:
        return _huber(y_val, _forward_all(forward, x_val), w_val)

    # Epoch 0 is the untrained network (the training mean): a network that never beats it on the
    # validation tail is given back as it, rather than as its least bad overfit.
    trained = train_epochs(
        len(x_fit),
        budget.epochs,
        budget.batch_size,
        budget.patience,
        budget.seed,
        lambda rows: step(x_fit[rows], y_fit[rows], w_fit[rows]),
        val_loss if validating else None,
        model.get_weights,
    )
    if validating:
        model.set_weights(trained.best_weights)

    params = {
        **arch,
        "trainable_parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
        "epochs_run": trained.epochs_run,
        "best_epoch": trained.best_epoch,
        "best_val_loss": trained.best_loss,
        "train_rows": len(x),
        "fit_rows": len(x_fit),
        "val_rows": len(x_val),
        "target_centre": centre,
        "target_scale": scale,
        "dtype_policy": device["policy"],
        "fit_seconds": round(time.perf_counter() - started, 3),
    }
    return SequenceNetwork(model, centre, scale, params, device, weights=model.get_weights(), _forward=forward)


# --- The families ---------------------------------------------------------------------------------
# name: (builder, description, architecture). `layers` counts each family's stacked blocks.

ARCHITECTURES: dict[str, tuple[Callable, str, dict[str, int]]] = {
    "lstm": (
        _recurrent("LSTM"),
        "An LSTM over the window; its last state gives the forecast.",
        {"units": 32, "layers": 1},
    ),
    "gru": (_recurrent("GRU"), "A GRU over the window; its last state gives the forecast.", {"units": 32, "layers": 1}),
    "tcn": (
        _tcn,
        "Temporal convolution: causal Conv1D blocks dilated 1, 2, 4, 8, each residual; the last step forecasts.",
        {"units": 32, "layers": 4, "kernel": 3},
    ),
    "cnn_lstm": (
        _cnn_lstm,
        "A causal Conv1D over the window's steps, then an LSTM.",
        {"units": 32, "layers": 1, "kernel": 3},
    ),
    "attention": (
        _attention,
        "Self-attention over the window (positions embedded, 4 heads, layer norm); the last step forecasts.",
        {"units": 32, "layers": 1, "heads": 4},
    ),
}
# What every network shares; with its architecture, what MLflow logs of a family.
COMMON = {"loss": "huber", "huber_delta": HUBER_DELTA, "learning_rate": LEARNING_RATE, "clip": CLIP}


def _register(name: str, build: Callable, description: str, arch: dict[str, int]) -> None:
    def fit(inputs: Inputs, budget: Budget) -> SequenceNetwork:
        return train(name, build, inputs, budget, **arch)

    fit.__name__ = fit.__qualname__ = name
    register(name, "neural", "sequence", description, **arch, **COMMON)(fit)


for _name, (_build, _description, _arch) in ARCHITECTURES.items():
    _register(_name, _build, _description, _arch)
