"""Ensembles on synthetic out-of-fold forecasts: stacking recovers known weights, the blend favours the
accurate family in each regime state, conviction and confidence by hand, and no look-ahead anywhere."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from cbi_assets.ensembles.blend import BlendPlan, blend, blend_weights
from cbi_assets.ensembles.conformal import Calibration
from cbi_assets.ensembles.conviction import confidence, conviction, typical_move
from cbi_assets.ensembles.forecasts import (
    EnsemblePlan,
    comparison,
    ensemble,
    forecast_at,
    members_table,
    weights_at,
)
from cbi_assets.ensembles.maturity import matured_counts
from cbi_assets.ensembles.members import Members, assemble, state_asof
from cbi_assets.ensembles.stacking import (
    Stacker,
    fit_state_ridge,
    trainable_folds,
    walk_stacked,
)
from cbi_assets.regimes.state import PROBABILITIES

CALM, CRISIS = np.array([1.0, 0, 0, 0]), np.array([0, 0, 0, 1.0])


def timeline(n: int, horizon: int, fold_rows: int):
    dates = pl.date_range(dt.date(2001, 1, 1), dt.date(2001, 1, 1) + dt.timedelta(days=n + horizon - 1), eager=True)
    return dates[:n], dates[horizon : n + horizon], np.arange(n) // fold_rows


def synthetic_members(n=1200, horizon=5, fold_rows=100, seed=0) -> Members:
    """Three families around a known truth in alternating calm and crisis stretches: `good` is close
    to it when calm, `other` when in crisis; `noise` never is."""
    rng = np.random.default_rng(seed)
    origins, label_end, folds = timeline(n, horizon, fold_rows)
    crisis = (np.arange(n) // 150) % 2 == 1
    truth = rng.normal(0, 0.03, n)
    good = truth + rng.normal(0, np.where(crisis, 0.03, 0.005))
    other = truth + rng.normal(0, np.where(crisis, 0.005, 0.03))
    noise = rng.normal(0, 0.03, n)
    actual = truth + rng.normal(0, 0.01, n)
    states = np.where(crisis, "crisis", "calm")
    probs = np.where(crisis[:, None], CRISIS, CALM)
    rows = pl.DataFrame(
        {
            "date": origins,
            "fold": folds,
            "regime": "named",
            "price": 100.0,
            "forward_price": 100 * np.exp(actual),
            "actual": actual,
            "label_end": label_end,
            "scale": np.full(n, 0.03),
            "state": states,
            **{p: probs[:, i] for i, p in enumerate(PROBABILITIES)},
            "quantile_lower": good - 0.04,
            "quantile_upper": good + 0.04,
        }
    )
    names = ("random_walk", "good", "other", "noise")
    return Members(rows, names, np.column_stack([np.zeros(n), good, other, noise]), (), "date")


# --- Stacking --------------------------------------------------------------------------------------


def test_stacking_recovers_known_weights():
    rng = np.random.default_rng(1)
    n = 2000
    a, b, c = (rng.normal(0, 0.02, n) for _ in range(3))
    truth = 0.7 * a + 0.3 * b + rng.normal(0, 0.002, n)
    model = fit_state_ridge(np.column_stack([a, b, c]), np.tile(CALM, (n, 1)), truth, horizon=5)
    np.testing.assert_allclose(model.family_weights(0), [0.7, 0.3, 0.0], atol=0.03)
    # Weights per state: in crisis the truth follows b alone.
    crisis = np.arange(n) % 2 == 1
    truth = np.where(crisis, b, 0.7 * a + 0.3 * b) + rng.normal(0, 0.002, n)
    states = np.where(crisis[:, None], CRISIS, CALM)
    model = fit_state_ridge(np.column_stack([a, b, c]), states, truth, horizon=5)
    np.testing.assert_allclose(model.family_weights(0), [0.7, 0.3, 0.0], atol=0.03)
    np.testing.assert_allclose(model.family_weights(3), [0.0, 1.0, 0.0], atol=0.03)
    assert (model.weights >= 0).all()


def test_each_fold_is_stacked_on_matured_earlier_rows_only():
    n, horizon = 500, 5
    origins, label_end, folds = timeline(n, horizon, 100)
    seen = []

    class Mean:
        def __init__(self, y):
            self.mean = float(np.mean(y))

        def predict(self, forecasts, states):
            return np.full(len(forecasts), self.mean)

    def fit(forecasts, states, y, h, threads):
        seen.append(len(y))
        return Mean(y)

    evaluated = trainable_folds(folds, label_end, origins, min_rows=100)
    assert evaluated == [2, 3, 4]  # fold 1 has 95 matured rows before it: too few
    y = np.arange(n, dtype=float)
    out = walk_stacked(
        Stacker("mean", fit, ""), np.zeros((n, 2)), np.zeros((n, 4)), y, folds, label_end, origins, evaluated, horizon
    )
    # The label of row s ends at row s + 5: fold k (first row 100k) learns from rows 0 .. 100k - 6.
    assert seen == [195, 295, 395]
    assert np.isnan(out[:200]).all() and out[200] == pytest.approx(np.mean(np.arange(195)))
    seen.clear()
    walk_stacked(
        Stacker("mean", fit, ""),
        np.zeros((n, 2)),
        np.zeros((n, 4)),
        y,
        folds,
        label_end,
        origins,
        evaluated,
        horizon,
        max_rows=50,
    )
    assert seen == [50, 50, 50]


def test_matured_counts_purge_the_last_horizon_rows():
    origins, label_end, _ = timeline(20, 3, 10)
    assert matured_counts(label_end, origins).tolist() == [0, 0, 0, 0, *range(1, 17)]
    with pytest.raises(ValueError, match="decreases at row 2"):
        matured_counts(np.array([1, 3, 2]), np.array([4]))


# --- The blend -------------------------------------------------------------------------------------


def test_blend_weights_follow_accuracy_in_the_current_state():
    members = synthetic_members()
    rows = members.rows
    weights, fell_back = blend_weights(
        members.forecasts,
        rows["actual"].to_numpy(),
        rows["state"].to_numpy(),
        rows["label_end"],
        rows["date"],
        BlendPlan(window=100, min_rows=30),
    )
    good, other = members.names.index("good"), members.names.index("other")
    calm, crisis = rows["state"].to_numpy() == "calm", rows["state"].to_numpy() == "crisis"
    late = np.arange(rows.height) > 400
    # Squared errors: good 0.005^2 + 0.01^2 against other 0.03^2 + 0.01^2 when calm: about 8 to 1.
    assert np.median(weights[calm & late, good]) > 0.6 > 0.15 > np.median(weights[calm & late, other])
    assert np.median(weights[crisis & late, other]) > 0.6 > 0.15 > np.median(weights[crisis & late, good])
    np.testing.assert_allclose(weights[35:].sum(axis=1), 1.0)
    # The first crisis rows have no matured crisis history yet: they borrow every state's errors.
    first_crisis = int(np.argmax(crisis))
    assert fell_back[first_crisis] and not fell_back[first_crisis + 60]
    assert np.isnan(weights[:35]).all()  # fewer than 30 matured rows at all


def test_weights_at_a_new_origin_follow_the_same_rule():
    members = synthetic_members()
    rows, plan = members.rows, BlendPlan(window=100, min_rows=30)
    weights, _ = blend_weights(
        members.forecasts, rows["actual"].to_numpy(), rows["state"].to_numpy(), rows["label_end"], rows["date"], plan
    )
    table = members_table(members)
    for t in (460, 1001):
        latest = weights_at(table, members.names, rows["state"][t], rows["date"][t], plan)
        np.testing.assert_allclose([latest[n] for n in members.names], weights[t], rtol=1e-9)
    assert weights_at(table, members.names, "calm", rows["date"][20], plan) is None


# --- Conviction and confidence ---------------------------------------------------------------------


def test_conviction_by_hand():
    members = np.array(
        [
            [0.02, 0.01, -0.01, 0.02],  # 3 of 4 agree; mean 0.01, sd 0.012247
            [0.01, 0.01, 0.01, 0.01],  # unanimous, no spread
            [0.01, -0.01, 0.02, 0.0],
        ]
    )  # the ensemble says no move
    values = conviction(members, np.array([0.01, 0.01, 0.0]))
    np.testing.assert_allclose(values, [0.75 * 0.01 / (0.01 + np.sqrt(1.5e-4)), 1.0, 0.0])
    assert conviction(members[:1], np.array([-0.01]))[0] == pytest.approx(0.25 * 0.01 / (0.01 + np.sqrt(1.5e-4)))


def test_confidence_by_hand():
    # precision 0.02 / (0.02 + 0.03) = 0.4; consensus 0.02 / (0.02 + 0.012247) = 0.6202
    value = confidence(np.array([0.03]), np.array([np.sqrt(1.5e-4)]), np.array([0.02]))
    assert value[0] == pytest.approx(0.4 * 0.02 / (0.02 + np.sqrt(1.5e-4)))
    assert confidence(np.array([0.0]), np.array([0.0]), np.array([0.02]))[0] == 1.0
    assert np.isnan(confidence(np.array([np.nan]), np.array([0.0]), np.array([0.02]))[0])
    origins, label_end, _ = timeline(6, 2, 3)
    typical = typical_move(np.array([0.1, -0.3, 0.2, 0.0, 0.5, 0.1]), label_end, origins)
    np.testing.assert_allclose(typical, [np.nan, np.nan, np.nan, 0.1, 0.2, 0.2])


# --- Members ---------------------------------------------------------------------------------------


def test_regime_state_is_taken_as_known_at_the_origin():
    # 4 March: no Markov probabilities yet (the VIX band says calm); 5 March: a confirmed crisis.
    state = pl.DataFrame(
        {
            "date": [dt.date(2024, 3, 4), dt.date(2024, 3, 5)],
            "regime": [None, "crisis"],
            "state": ["calm", "crisis"],
            **{p: [None, 0.0] for p in PROBABILITIES[:3]},
            "p_crisis": [None, 1.0],
        }
    )
    daily = state_asof(
        pl.DataFrame({"date": [dt.date(2024, 3, 1), dt.date(2024, 3, 4), dt.date(2024, 3, 5)]}), state, "date"
    )
    assert daily["state"].to_list() == ["unknown", "calm", "crisis"]  # a session takes its own close's state
    assert daily.row(1, named=True)["p_calm"] == 1.0 and daily.row(2, named=True)["p_crisis"] == 1.0
    # An intraday bar of the 5 March session knows the state of 4 March only.
    bars = pl.DataFrame(
        {
            "ts": [dt.datetime(2024, 3, 4, 23, 0), dt.datetime(2024, 3, 5, 14, 0)],
            "trade_date": [dt.date(2024, 3, 5), dt.date(2024, 3, 5)],
        }
    )
    assert state_asof(bars, state, "ts")["state"].to_list() == ["calm", "calm"]


def test_families_from_other_folds_are_refused():
    origins, label_end, folds = timeline(10, 2, 5)
    frame = pl.DataFrame(
        {
            "date": origins,
            "fold": folds,
            "regime": "r",
            "price": 1.0,
            "forward_price": 1.0,
            "actual": 0.0,
            "forecast": 0.0,
        }
    )
    table = pl.DataFrame({"date": origins, "label_end": label_end, "scale": 0.01})
    with pytest.raises(ValueError, match="oof: ets covers 8 rows but random_walk covers 10"):
        assemble({"random_walk": frame, "arima": frame, "ets": frame.head(8)}, table, None, "date", where="oof")
    members = assemble(
        {"random_walk": frame, "arima": frame.with_columns(pl.lit(0.01).alias("forecast"))},
        table,
        None,
        "date",
        ("ets",),
        where="oof",
    )
    assert members.names == ("random_walk", "arima") and members.missing == ("ets",)
    assert members.rows["quantile_lower"].is_null().all() and members.directional == ("arima",)
    with pytest.raises(ValueError, match="at least 2 families besides random_walk"):
        ensemble(members, 2, periods_per_year=252, cost_bps=1.0)


# --- The whole walk --------------------------------------------------------------------------------


def test_ensembles_scored_on_the_same_folds_and_blind_to_the_future():
    members = synthetic_members()
    plan = EnsemblePlan(blend=BlendPlan(window=100, min_rows=30), stack_min_rows=100, min_scores=50)
    result = ensemble(members, 5, plan, periods_per_year=252, cost_bps=1.0)
    assert result.evaluated == list(range(2, 12))  # fold 1 has 95 matured rows before it
    rows = result.oof["blend"].height
    assert all(frame.height == rows for frame in result.oof.values())
    assert all(score.filter(pl.col("scope") == "overall")["rows"][0] == rows for score in result.scores.values())
    board = comparison(result, members)
    assert set(board["ensemble"]) == {"stack_ridge", "stack_lightgbm", "blend"}
    # The regime-aware combinations beat any one family here, each of which is poor in one state.
    assert board.filter(pl.col("ensemble") != "stack_lightgbm")["beats_best_family"].all()
    assert board["random_walk_mase"].to_list() == [1.0] * 3

    table = result.forecasts
    forecast_side = [
        "forecast",
        "lower_80",
        "upper_80",
        "lower_90",
        "upper_90",
        "conviction",
        "confidence",
        "typical_move",
    ]
    stacked = {name: frame["forecast"] for name, frame in result.oof.items()}
    for t in (300, 455, 731):  # a fold's first row and rows inside folds
        origin = members.rows["date"][t]
        unknown = (members.rows["label_end"] >= origin).to_numpy()
        changed = members.rows.with_columns(
            pl.when(pl.Series(unknown)).then(pl.col("actual") * -3 + 0.05).otherwise(pl.col("actual")).alias("actual")
        )
        again = ensemble(
            Members(changed, members.names, members.forecasts, (), "date"), 5, plan, periods_per_year=252, cost_bps=1.0
        )
        upto = table["date"] <= origin
        for column in forecast_side:
            assert again.forecasts.filter(upto)[column].equals(table.filter(upto)[column]), (t, column)
        for name, values in stacked.items():
            assert again.oof[name]["forecast"].filter(upto).equals(values.filter(upto)), (t, name)
        assert not again.forecasts["forecast"].equals(table["forecast"])  # the change reaches later rows


def test_forecast_at_a_new_origin_from_stored_tables():
    members = synthetic_members()
    plan = EnsemblePlan(blend=BlendPlan(window=100, min_rows=30))
    result = ensemble(members, 5, plan, periods_per_year=252, cost_bps=1.0)
    history, table = result.forecasts, members_table(members)
    t = 1100
    row = members.rows.row(t, named=True)
    latest = forecast_at(
        dict(zip(members.names, members.forecasts[t], strict=True)),
        row["state"],
        row["date"],
        price=100.0,
        scale=0.03,
        members=table,
        history=history,
        plan=plan,
        calibration=Calibration.of(5, 252),
    )
    stored = history.filter(pl.col("date") == row["date"]).row(0, named=True)
    assert latest["forecast"] == pytest.approx(stored["forecast"])
    assert latest["conviction"] == pytest.approx(stored["conviction"])
    assert latest["forecast_price"] == pytest.approx(100 * np.exp(stored["forecast"]))
    assert latest["lower_90"] < latest["lower_80"] < latest["forecast"] < latest["upper_80"] < latest["upper_90"]
    assert 0 < latest["confidence"] < 1 and latest["weights"]["good"] > latest["weights"]["noise"]
    with pytest.raises(ValueError, match="at least 2 stored families"):
        forecast_at(
            {"random_walk": 0.0, "good": 0.01},
            "calm",
            row["date"],
            100.0,
            0.03,
            table,
            history,
            plan,
            calibration=Calibration.of(5, 252),
        )
    assert blend(np.array([[1.0, 3.0]]), np.array([[0.25, 0.75]]))[0] == 2.5
