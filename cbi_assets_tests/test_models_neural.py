"""The Keras sequence families learn a learnable target, repeat themselves under one seed, and save."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from cbi_assets.models import device, neural, registry
from cbi_assets.models.registry import Budget, Inputs, windows

FAMILIES = tuple(neural.ARCHITECTURES)
ROWS, TRAIN, LENGTH, FEATURES = 600, 500, 16, 8
BUDGET = Budget(epochs=20, patience=5, boost_rounds=0, sequence_length=LENGTH, batch_size=64, max_train_rows=None)


@pytest.fixture(scope="module")
def data() -> tuple[Inputs, Inputs, np.ndarray]:
    """Training and test windows whose forward return is a noisy function of the last step."""
    rng = np.random.default_rng(11)
    flat = rng.standard_normal((ROWS, FEATURES)).astype(np.float32)
    flat[rng.random(flat.shape) < 0.01] = np.nan  # robust-scaled features keep their gaps
    last = np.nan_to_num(flat)
    y = 0.01 * (last[:, 0] - 0.5 * last[:, 1] + 0.5 * np.tanh(2 * last[:, 2])) + 0.003 * rng.standard_normal(ROWS)
    x = windows(flat, LENGTH)  # cut over the whole series, so test windows see training rows
    weight = rng.uniform(0.5, 2.0, ROWS)

    def part(rows: slice, labelled: bool) -> Inputs:
        n = len(range(ROWS)[rows])
        return Inputs(
            x=x[rows], y=y[rows] if labelled else None, weight=weight[rows], returns=np.zeros(n), horizon=1, season=5
        )

    return part(slice(0, TRAIN), True), part(slice(TRAIN, ROWS), False), y[TRAIN:]


@pytest.fixture(scope="module")
def fitted(data) -> dict:
    train, _, _ = data
    return {name: registry.FAMILIES[name].fit(train, BUDGET) for name in FAMILIES}


def test_the_five_families_are_registered_as_sequence_networks():
    for name in ("lstm", "gru", "tcn", "cnn_lstm", "attention"):
        family = registry.FAMILIES[name]
        assert (family.kind, family.shape) == ("neural", "sequence")
        assert family.params["units"] > 0 and family.description


@pytest.mark.integration
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_forecasts_each_test_row(fitted, data, name):
    _, test, _ = data
    model = fitted[name]
    mean = model.predict(test).mean
    assert mean.shape == (test.rows,)
    assert np.isfinite(mean).all()
    assert mean.std() > 1e-5, f"{name} forecasts a constant {mean[0]:.3g}"
    assert {"units", "layers", "epochs_run", "best_epoch", "best_val_loss"} <= model.params.keys()
    assert 1 <= model.params["epochs_run"] <= BUDGET.epochs
    assert model.device == device.training_device()


@pytest.mark.integration
def test_lstm_beats_the_zero_forecast(fitted, data):
    _, test, y = data
    mse = np.mean((fitted["lstm"].predict(test).mean - y) ** 2)
    assert mse < 0.5 * np.mean(y**2), f"lstm MSE {mse:.3g} against the zero forecast's {np.mean(y**2):.3g}"


@pytest.mark.integration
def test_the_same_seed_gives_the_same_forecast(fitted, data):
    train, test, _ = data
    again = registry.FAMILIES["lstm"].fit(train, BUDGET).predict(test).mean
    np.testing.assert_allclose(again, fitted["lstm"].predict(test).mean, rtol=1e-5, atol=1e-8)
    other = Budget(**{**BUDGET.__dict__, "seed": BUDGET.seed + 1})
    assert not np.allclose(registry.FAMILIES["lstm"].fit(train, other).predict(test).mean, again)


@pytest.mark.integration
def test_saved_and_pickled_networks_forecast_the_same(fitted, data, tmp_path):
    import keras

    _, test, _ = data
    model = fitted["attention"]
    expected = model.predict(test).mean
    loaded = keras.saving.load_model(model.save(tmp_path / "attention.keras"))
    np.testing.assert_allclose(loaded.predict(test.x, verbose=0)[:, 0], expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(model)).predict(test).mean, expected, rtol=1e-5, atol=1e-8)


def test_training_keeps_the_most_recent_rows(data):
    train, _, _ = data
    short = Budget(**{**BUDGET.__dict__, "epochs": 1, "max_train_rows": 200})
    assert registry.FAMILIES["gru"].fit(train, short).params["train_rows"] == 200


def test_mixed_precision_keeps_a_float32_output(data, monkeypatch):
    # No GPU here: run the CUDA path's float16 layers on the CPU to check the wiring.
    monkeypatch.setattr(
        neural,
        "training_device",
        lambda: {"device": "cuda", "name": "test", "mixed_precision": True, "policy": "mixed_float16", "count": 1},
    )
    train, test, _ = data
    model = registry.FAMILIES["tcn"].fit(train, Budget(**{**BUDGET.__dict__, "epochs": 2}))
    assert model.model.layers[-1].dtype_policy.name == "float32"
    assert model.model.layers[-2].dtype_policy.name == "mixed_float16"
    assert np.isfinite(model.predict(test).mean).all()


def test_tabular_rows_are_refused_with_a_pointer_to_windows(data):
    train, _, _ = data
    flat = Inputs(x=train.x[:, -1, :], y=train.y, weight=train.weight, returns=train.returns, horizon=1, season=5)
    with pytest.raises(ValueError, match="registry.windows"):
        registry.FAMILIES["lstm"].fit(flat, BUDGET)


def test_training_device_is_the_cpu_without_a_gpu():
    import tensorflow as tf

    found = device.training_device()
    if tf.config.list_physical_devices("GPU"):
        assert found["device"] in ("cuda", "metal")
    else:
        assert found == {**found, "device": "cpu", "mixed_precision": False, "policy": "float32"}
    found["device"] = "changed"
    assert device.training_device()["device"] != "changed"  # callers get a copy of the cached answer
