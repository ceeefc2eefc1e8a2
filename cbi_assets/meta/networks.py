"""The small Keras networks of the meta layer and their two training loops.

`Network` wraps a model with traced passes for the fast loops: Reptile runs thousands of short
SGD adaptations, so one adaptation (all its steps), or one outer step of a batch of them, is one
traced call rather than a Python loop of steps. `Trainer` fits a network with Adam and early
stopping on a purged validation tail, for the transfer encoder and heads.

Everything here is float32 whatever the device: the networks are tiny, and Reptile moves its
meta-weights by differences of adapted weights that float16 would round away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cbi_assets.models.registry import train_epochs, validation_split

# Inputs are robust-scaled before they reach a network; beyond this many IQRs a value says
# "extreme", not how extreme (the models' convention, cbi_assets.models.inputs.CLIP).
CLIP = 10.0
HUBER_DELTA = 1.0  # in target standard deviations: fat-tailed days weigh linearly, not squared
PREDICT_CHUNK = 8192


def clean(x: np.ndarray) -> np.ndarray:
    """Scaled features as a network reads them: float32, a missing value at the median (0), clipped."""
    out = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=CLIP, neginf=-CLIP)
    return np.clip(out, -CLIP, CLIP, out=out)


def fresh_session(seed: int) -> None:
    """A clean Keras graph and seeded initialisers; call before building a model that must repeat."""
    import keras

    keras.backend.clear_session(free_memory=False)  # its garbage collection costs ~0.3 s a call
    keras.utils.set_random_seed(seed)


def mlp(features: int, units: Sequence[int], name: str = "meta_mlp"):
    """Features -> ReLU layers -> the scaled forward return. The output layer starts at zero, so an
    untrained network forecasts no change: the random walk."""
    import keras

    inputs = keras.Input((features,), name="features")
    h = inputs
    for i, width in enumerate(units):
        h = keras.layers.Dense(width, activation="relu", dtype="float32", name=f"hidden_{i}")(h)
    out = keras.layers.Dense(1, kernel_initializer="zeros", dtype="float32", name="forward_return")(h)
    return keras.Model(inputs, out, name=name)


def _huber(y, pred):
    import tensorflow as tf

    error = tf.abs(y - pred)
    quadratic = tf.minimum(error, HUBER_DELTA)
    return 0.5 * quadratic**2 + HUBER_DELTA * (error - quadratic)


@dataclass(eq=False)
class Network:
    """A one-input, one-output Keras model with traced forward, plain-SGD and Reptile passes.

    `sgd(x, y, batches, learning_rate)` runs one step per row of `batches` (row indices into x, y)
    in a single traced call; plain SGD keeps no optimizer state, so an adaptation depends only on
    the weights it starts from, which Reptile's outer loop needs. `reptile_step` runs one outer
    step of Reptile (a batch of adaptations and the move of the meta-weights) in one call, the
    meta-weights kept as variables beside the model's.
    """

    model: Any
    _sgd: Any = field(default=None, repr=False)
    _forward: Any = field(default=None, repr=False)
    _outer: dict = field(default_factory=dict, repr=False)  # traced outer steps by meta-batch size
    _meta: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        import tensorflow as tf

        features = self.features
        self._sgd = tf.function(
            self._steps,
            input_signature=[
                tf.TensorSpec((None, features), tf.float32),
                tf.TensorSpec((None,), tf.float32),
                tf.TensorSpec((None, None), tf.int32),
                tf.TensorSpec((), tf.float32),
            ],
        )
        self._forward = tf.function(
            lambda x: self.model(x, training=False)[:, 0],
            autograph=False,
            input_signature=[tf.TensorSpec((None, features), tf.float32)],
        )

    def _steps(self, x, y, batches, learning_rate):
        import tensorflow as tf

        variables = self.model.trainable_variables
        for i in tf.range(tf.shape(batches)[0]):
            rows = batches[i]
            xb, yb = tf.gather(x, rows), tf.gather(y, rows)
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(_huber(yb, self.model(xb, training=True)[:, 0]))
            for variable, grad in zip(variables, tape.gradient(loss, variables), strict=True):
                variable.assign_sub(learning_rate * grad)
        return tf.constant(0.0)

    def _outer_step(self, tasks: int):
        import tensorflow as tf

        if tasks in self._outer:
            return self._outer[tasks]
        variables = self.model.trainable_variables

        @tf.function(
            input_signature=[
                tf.TensorSpec((tasks, None, self.features), tf.float32),
                tf.TensorSpec((tasks, None), tf.float32),
                tf.TensorSpec((tasks, None, None), tf.int32),
                tf.TensorSpec((), tf.float32),
                tf.TensorSpec((), tf.float32),
            ]
        )
        def outer(xs, ys, batches, learning_rate, step):
            deltas = [tf.zeros_like(m) for m in self._meta]
            for k in range(tasks):  # unrolled: the meta-batch is small and fixed
                for variable, meta in zip(variables, self._meta, strict=True):
                    variable.assign(meta)
                self._steps(xs[k], ys[k], batches[k], learning_rate)
                deltas = [
                    d + (tf.convert_to_tensor(v) - m) for d, v, m in zip(deltas, variables, self._meta, strict=True)
                ]
            for meta, d in zip(self._meta, deltas, strict=True):
                meta.assign_add(step * d / tasks)
            return tf.constant(0.0)

        self._outer[tasks] = outer
        return outer

    @property
    def features(self) -> int:
        return int(self.model.input_shape[-1])

    def weights(self) -> list[np.ndarray]:
        return [np.array(v.numpy()) for v in self.model.trainable_variables]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        for variable, value in zip(self.model.trainable_variables, weights, strict=True):
            variable.assign(value)

    def sgd(self, x: np.ndarray, y: np.ndarray, batches: np.ndarray, learning_rate: float) -> None:
        if len(batches):
            self._sgd(x, y.astype(np.float32), batches.astype(np.int32), np.float32(learning_rate))

    def start_meta(self, weights: Sequence[np.ndarray]) -> None:
        """Set the meta-weights Reptile starts from."""
        import tensorflow as tf

        if not self._meta:
            self._meta = [tf.Variable(np.asarray(w, np.float32), trainable=False) for w in weights]
        for meta, value in zip(self._meta, weights, strict=True):
            meta.assign(value)

    def reptile_step(
        self, xs: np.ndarray, ys: np.ndarray, batches: np.ndarray, learning_rate: float, step: float
    ) -> None:
        """One Reptile outer step: from the meta-weights, adapt to each task k (xs[k], ys[k] along
        batches[k]) and move the meta-weights `step` of the way towards the adapted ones' mean."""
        self._outer_step(len(xs))(
            xs.astype(np.float32),
            ys.astype(np.float32),
            batches.astype(np.int32),
            np.float32(learning_rate),
            np.float32(step),
        )

    def meta_weights(self) -> list[np.ndarray]:
        return [np.array(m.numpy()) for m in self._meta]

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = [np.asarray(self._forward(x[i : i + PREDICT_CHUNK])) for i in range(0, len(x), PREDICT_CHUNK)]
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def epoch_batches(rows: int, epochs: int, batches: int, rng: np.random.Generator) -> np.ndarray:
    """(epochs x batches, batch) row indices: each epoch a fresh permutation cut into `batches` equal
    batches, so an adaptation is the same number of steps whatever the support's size (a remainder
    of fewer than `batches` rows sits out that epoch and comes back in the next permutation)."""
    per = max(1, min(batches, rows))
    size = rows // per
    if rows == 0 or epochs < 1:
        return np.zeros((0, max(size, 1)), dtype=np.int32)
    order = [rng.permutation(rows)[: per * size].reshape(per, size) for _ in range(epochs)]
    return np.concatenate(order).astype(np.int32)


# --- Adam with early stopping (transfer) -------------------------------------------------------


@dataclass(eq=False)
class Trainer:
    """A multi-input Keras model with its Adam optimizer and traced train and loss steps, reset to its
    seeded initial state before each fit. Fits of one shape share it: building and tracing costs
    about a second, more than a sample-profile fit."""

    model: Any
    learning_rate: float
    initial: list = field(default_factory=list, repr=False)
    _optimizer: Any = field(default=None, repr=False)
    _initial_optimizer: list = field(default_factory=list, repr=False)
    _step: Any = field(default=None, repr=False)
    _loss: Any = field(default=None, repr=False)
    _forward: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        import keras
        import tensorflow as tf

        model = self.model
        variables = model.trainable_variables
        self.initial = [np.array(v.numpy()) for v in variables]
        self._optimizer = optimizer = keras.optimizers.Adam(self.learning_rate, global_clipnorm=1.0)
        optimizer.build(variables)
        self._initial_optimizer = [np.array(v.numpy()) for v in optimizer.variables]
        specs = [tf.TensorSpec((None, *i.shape[1:]), tf.float32) for i in model.inputs]
        single = len(specs) == 1  # a one-input model takes its tensor, not a list of one

        def forward(xb, training):
            return model(xb[0] if single else xb, training=training)

        target = tf.TensorSpec((None, model.outputs[0].shape[-1]), tf.float32)

        def masked(yb, mb, pred):
            return tf.reduce_sum(mb * _huber(yb, pred)) / tf.maximum(tf.reduce_sum(mb), 1.0)

        @tf.function(
            input_signature=[specs, target, target, tf.TensorSpec((len(variables),), tf.float32)], autograph=False
        )
        def step(xb, yb, mb, keep):
            with tf.GradientTape() as tape:
                loss = masked(yb, mb, forward(xb, True))
            grads = tape.gradient(loss, variables)
            # A frozen variable gets a zero gradient: from Adam's reset state it then never moves.
            optimizer.apply([g * keep[i] for i, g in enumerate(grads)], variables)
            return loss

        @tf.function(input_signature=[specs, target, target], autograph=False)
        def loss(xb, yb, mb):
            return masked(yb, mb, forward(xb, False))

        self._step, self._loss = step, loss
        self._forward = tf.function(lambda xb: forward(xb, False)[:, 0], input_signature=[specs], autograph=False)

    def weights(self) -> list[np.ndarray]:
        return [np.array(v.numpy()) for v in self.model.trainable_variables]

    def reset(self, weights: Sequence[np.ndarray] | None = None) -> None:
        for variable, value in zip(self.model.trainable_variables, weights or self.initial, strict=True):
            variable.assign(value)
        for variable, value in zip(self._optimizer.variables, self._initial_optimizer, strict=True):
            variable.assign(value)

    def fit(
        self,
        xs: list[np.ndarray],
        y: np.ndarray,
        mask: np.ndarray | None = None,
        *,
        epochs: int,
        batch_size: int,
        patience: int,
        horizon: int,
        validation_fraction: float,
        seed: int,
        frozen: Sequence[Any] = (),
    ) -> dict:
        """Train from the current weights with Adam on the masked Huber loss of y (rows, outputs).

        `mask` (rows, outputs) says which outputs a row has a label for (a pre-training row belongs
        to one asset); `frozen` variables keep their values. The tail of the rows, after a purge of
        `horizon` rows, is the validation set; the weights of the best validation epoch are kept
        (epoch 0, the starting network, included). Returns what the training did.
        """
        variables = self.model.trainable_variables
        keep = np.array([0.0 if any(v is f for f in frozen) else 1.0 for v in variables], np.float32)
        y = np.asarray(y, dtype=np.float32).reshape(len(y), -1)
        mask = np.ones_like(y) if mask is None else np.asarray(mask, dtype=np.float32).reshape(y.shape)
        xs = [np.asarray(x, dtype=np.float32) for x in xs]
        fit_rows, val_rows = validation_split(len(y), horizon, validation_fraction)
        x_fit, x_val = [x[fit_rows] for x in xs], [x[val_rows] for x in xs]
        y_fit, m_fit, y_val, m_val = y[fit_rows], mask[fit_rows], y[val_rows], mask[val_rows]
        validating = len(y_val) > 0

        def val_loss() -> float:
            return float(self._loss(x_val, y_val, m_val))

        trained = train_epochs(
            len(y_fit),
            epochs,
            batch_size,
            patience,
            seed,
            lambda rows: self._step([x[rows] for x in x_fit], y_fit[rows], m_fit[rows], keep),
            val_loss if validating else None,
            self.weights,
        )
        if validating:
            for variable, value in zip(variables, trained.best_weights, strict=True):
                variable.assign(value)
        return {
            "epochs_run": trained.epochs_run,
            "best_epoch": trained.best_epoch,
            "best_val_loss": trained.best_loss,
            "fit_rows": len(y_fit),
            "val_rows": len(y_val),
        }

    def predict(self, xs: list[np.ndarray]) -> np.ndarray:
        """The first output, in chunks."""
        rows = len(xs[0])
        out = [
            np.asarray(self._forward([np.asarray(x[i : i + PREDICT_CHUNK], np.float32) for x in xs]))
            for i in range(0, rows, PREDICT_CHUNK)
        ]
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)
