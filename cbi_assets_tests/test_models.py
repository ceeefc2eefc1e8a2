"""The model factory: the registry, the adapters, the metrics, and the leakage alarm (a family
trained on pure noise must not beat the random walk on purged folds, while a leaked label must)."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from cbi_assets.catalogue import ZL
from cbi_assets.models.evaluation import metrics, overall, scored, sign_returns
from cbi_assets.models.inputs import TrainingArrays, fold_inputs
from cbi_assets.models.leaderboard import leaderboard
from cbi_assets.models.registry import (
    FAMILIES,
    Budget,
    families,
    register,
    validation_split,
    windows,
)
from cbi_assets.models.walk import walk_family
from cbi_assets.profiles import PROFILES
from cbi_assets.training.folds import walk_forward
from cbi_assets.training.sets import fold_scalers

SAMPLE = PROFILES["sample"].training
HORIZON = ZL.horizon("1w")  # 5 sessions ahead
FOLD_PLAN = PROFILES["sample"].fold_plan(ZL, HORIZON)


def _noise_set(rows: int = 1500, features: int = 12, seed: int = 11, leak: bool = False) -> pl.DataFrame:
    """A ZL 1w training set of pure noise: random-walk prices, features unrelated to the future.
    With `leak`, one feature is the label itself (what a look-ahead bug would produce)."""
    rng = np.random.default_rng(seed)
    step = rng.standard_normal(rows + HORIZON.bars) * 0.01
    level = 50 * np.exp(np.cumsum(step))
    forward = np.log(level[HORIZON.bars :] / level[:rows])
    days = pl.date_range(
        dt.date(2010, 1, 1), dt.date(2010, 1, 1) + dt.timedelta(days=rows + HORIZON.bars - 1), eager=True
    )
    frame = pl.DataFrame(
        {
            "date": days[:rows],
            "label_end": days[HORIZON.bars :],
            "forward_return": forward,
            "forward_price": level[HORIZON.bars :],
            "direction": np.sign(forward).astype(np.int8),
            "regime": ["calm" if i < rows // 2 else "stressed" for i in range(rows)],
            "regime_weight": 1.0,
            "uniqueness": 1.0,
            "weight": 1.0,
            "zl_1d_ret_1": np.concatenate([[np.nan], np.diff(np.log(level[:rows]))]),
            **{f"noise_{i}": rng.standard_normal(rows).astype(np.float32) for i in range(features)},
        }
    )
    return frame.with_columns(pl.col("forward_return").cast(pl.Float32).alias("leak")) if leak else frame


def _walk(frame: pl.DataFrame, name: str, budget: Budget = SAMPLE) -> dict[str, float]:
    folds = walk_forward(frame["date"], frame["label_end"], FOLD_PLAN)
    features = [c for c in frame.columns if c.startswith(("noise_", "leak", "zl_"))]
    scalers = fold_scalers(frame, folds, features)
    oof, _, _ = walk_family(FAMILIES[name], frame, folds, scalers, ZL, HORIZON, budget, lambda message: None)
    assert oof.height == folds["test_rows"].sum()
    return overall(scored(oof, horizon=HORIZON.bars, periods_per_year=252, cost_bps=3.0))


# --- Registry and adapters ------------------------------------------------------------------------


def test_every_kind_has_families_and_names_are_unique():
    registered = families()
    assert {f.kind for f in registered} == {"reference", "statistical", "tree", "neural"}
    assert {"random_walk", "drift", "seasonal_naive", "lightgbm", "lightgbm_dart", "xgboost"} <= set(FAMILIES)
    with pytest.raises(ValueError, match="registered twice"):
        register("lightgbm", "tree", "tabular", "again")(lambda train, budget: None)
    with pytest.raises(ValueError, match="kind 'oracle'"):
        register("crystal_ball", "oracle", "tabular", "no such kind")(lambda train, budget: None)


def test_windows_end_at_their_row_and_pad_the_start():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    w = windows(x, 3)
    assert w.shape == (6, 3, 2)
    assert (w[4] == x[2:5]).all()  # window 4 ends at row 4
    assert (w[0] == x[0]).all()  # the first row has no history: repeated


def test_validation_tail_is_purged_by_the_horizon():
    fit, val = validation_split(100, 5, 0.2)
    assert (fit.stop, val.start, val.stop) == (75, 80, 100)
    assert validation_split(6, 5, 0.2) == (slice(0, 6), slice(6, 6))  # too short: no hold-out


def test_fold_inputs_scale_with_the_fold_scaler_and_reach_back_for_windows():
    frame = _noise_set(400)
    folds = walk_forward(frame["date"], frame["label_end"], FOLD_PLAN)
    features = [c for c in frame.columns if c.startswith(("noise_", "zl_"))]
    scalers = fold_scalers(frame, folds, features)
    data = TrainingArrays.of(frame, ZL, HORIZON)
    fold = folds.row(2, named=True)
    from cbi_assets.training.scaling import RobustScaler

    scaler = RobustScaler.from_frame(scalers.filter(pl.col("fold") == 2).drop("fold"))
    budget = Budget(**{**SAMPLE.__dict__, "max_train_rows": 50})
    train, test = fold_inputs(data, fold, scaler, "sequence", budget)
    assert train.rows == 50 and train.x.shape == (50, budget.sequence_length, len(features))
    assert test.rows == fold["test_rows"] and test.y is None
    # A test window's last step is its own row; earlier steps are the rows before it, however far back.
    tabular, _ = fold_inputs(data, {**fold, "train_lo": 0, "train_hi": fold["test_hi"]}, scaler, "tabular", SAMPLE)
    assert np.allclose(test.x[:, -1, :], tabular.x[fold["test_lo"] : fold["test_hi"] + 1])
    assert np.allclose(test.x[1:, -2, :], test.x[:-1, -1, :])
    # Returns carry history from the first training row; the slice's own rows come last.
    assert len(test.returns) == fold["test_hi"] + 1 - (fold["train_hi"] + 1 - 50)
    assert np.allclose(test.returns[-test.rows :], data.returns[fold["test_lo"] : fold["test_hi"] + 1])


# --- Metrics ---------------------------------------------------------------------------------------


def test_metrics_by_hand():
    actual = np.array([0.02, -0.01, 0.03, -0.02, 0.0])
    forecast = np.array([0.01, 0.01, 0.0, -0.01, 0.01])
    price = np.full(5, 100.0)
    got = metrics(actual, forecast, price, price * np.exp(actual), horizon=1, periods_per_year=252, cost_bps=0)
    assert got["mae"] == pytest.approx((0.01 + 0.02 + 0.03 + 0.01 + 0.01) / 5)
    assert got["mase"] == pytest.approx(got["mae"] / np.mean(np.abs(actual)))
    # The last row did not move: it has no direction to call and is left out.
    assert got["directional_accuracy"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    expected_mape = np.mean(np.abs(np.exp(forecast) - np.exp(actual)) / np.exp(actual)) * 100
    assert got["mape"] == pytest.approx(expected_mape)
    # Holding the sign: +2%, -1%, flat, +2%, 0; the 3 changes of position cost 5 bp each.
    net = sign_returns(actual, forecast, 1, cost_bps=5)
    assert np.allclose(net, [0.02 - 5e-4, -0.01, 0.0 - 5e-4, 0.02 - 5e-4, -1e-3])
    # A horizon of 2 trades every other origin, so overlapping labels are not counted twice.
    assert len(sign_returns(actual, forecast, 2, 0)) == 3


def test_scores_per_fold_regime_and_overall():
    oof = pl.DataFrame(
        {
            "fold": [0, 0, 1, 1],
            "regime": ["a", "b", "a", "b"],
            "price": 100.0,
            "actual": [0.01, -0.01, 0.02, 0.0],
            "forecast": [0.01, 0.0, 0.0, 0.0],
        }
    )
    oof = oof.with_columns((pl.col("price") * pl.col("actual").exp()).alias("forward_price"))
    scores = scored(oof, horizon=1, periods_per_year=252, cost_bps=0)
    assert scores.select("scope", "group").rows() == [
        ("fold", "0"),
        ("fold", "1"),
        ("regime", "a"),
        ("regime", "b"),
        ("overall", "all"),
        ("recent", "recent"),  # the most recent third of the folds: fold 1 of 2
    ]
    assert scores.filter(pl.col("scope") == "recent")["rows"][0] == 2
    assert scores.filter(pl.col("group") == "0")["mae"][0] == pytest.approx(0.005)
    assert overall(scores)["mase"] == pytest.approx(0.03 / 4 / (0.04 / 4))


def test_leaderboard_ranks_by_mase_beside_the_random_walk():
    rows = [("random_walk", 1.0, 0.5), ("lightgbm", 0.97, 0.55), ("arima", 1.02, 0.49)]
    metrics_files = pl.DataFrame(
        [
            {
                "scope": "overall",
                "family": f,
                "kind": "x",
                "run_id": f,
                "mape": 1.0,
                "rmse": 1.0,
                "mae": m,
                "mase": m,
                "directional_accuracy": d,
                "sharpe": 0.0,
            }
            for f, m, d in rows
        ]
    )
    board = leaderboard(metrics_files)
    assert board["family"].to_list() == ["lightgbm", "random_walk", "arima"]
    assert board["rank"].to_list() == [1, 2, 3] and (board["random_walk_directional_accuracy"] == 0.5).all()
    with pytest.raises(ValueError, match="random walk"):
        leaderboard(metrics_files.filter(pl.col("family") != "random_walk"))


# --- Leakage alarm --------------------------------------------------------------------------------

NOT_NEURAL = [f.name for f in families() if f.kind != "neural"]


@pytest.mark.parametrize("name", NOT_NEURAL)
def test_a_family_on_pure_noise_does_not_beat_the_random_walk(name):
    got = _walk(_noise_set(), name)
    # ~750 test rows of noise: a real skill of a few percent would show; chance stays within this.
    assert got["mase"] > 0.97, got
    assert got["directional_accuracy"] < 0.56, got


@pytest.mark.parametrize("name", ["lightgbm", "xgboost"])
def test_the_alarm_can_ring_a_leaked_label_beats_the_random_walk(name):
    got = _walk(_noise_set(leak=True), name)
    assert got["mase"] < 0.5 and got["directional_accuracy"] > 0.8, got


@pytest.mark.parametrize("name", ["lightgbm", "lightgbm_dart", "xgboost"])
def test_tree_forecasts_have_the_right_shape_and_vary(name):
    frame = _noise_set(600, leak=True)
    folds = walk_forward(frame["date"], frame["label_end"], FOLD_PLAN)
    features = [c for c in frame.columns if c.startswith(("noise_", "leak", "zl_"))]
    oof, _model, timings = walk_family(
        FAMILIES[name], frame, folds, fold_scalers(frame, folds, features), ZL, HORIZON, SAMPLE, lambda message: None
    )
    assert oof["forecast"].is_finite().all() and oof["forecast"].n_unique() > 10
    assert timings["train_s_per_fold"] > 0 and timings["predict_rows_per_s"] > 0
    if name == "lightgbm":  # the quantile interval brackets the forecast on most rows
        inside = ((oof["lower"] <= oof["forecast"]) & (oof["forecast"] <= oof["upper"])).mean()
        assert inside > 0.8 and (oof["upper"] >= oof["lower"]).all()
