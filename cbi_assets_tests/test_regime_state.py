"""The data-driven regime state: VIX bands, trend, walk-forward Markov-switching state, confirmed shifts."""

from __future__ import annotations

import datetime as dt
import logging
import time

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cbi_assets.regimes import state as regime
from cbi_assets.regimes.state import (
    MarkovPlan,
    confirm_regime,
    current_regime,
    markov_state,
    persistence_for,
    regime_state,
    shifts,
    trend_state,
    volatility_band,
)

D = dt.date.fromisoformat
# Small and quick: 1,500 rows, refits every 250 from row 500.
PLAN = MarkovPlan(refit_days=250, min_history=500, fit_window=None)
HIGH = ((300, 420), (950, 1100), (1300, 1400))  # rows of the high-variance segments; the first precedes the first fit


def synthetic(n: int = 1500, seed: int = 7) -> pl.DataFrame:
    """Daily closes whose returns switch between 0.5% and 4% standard deviation, with a VIX column."""
    rng = np.random.default_rng(seed)
    sd = np.full(n, 0.005)
    for start, end in HIGH:
        sd[start:end] = 0.04
    close = 100 * np.exp(np.cumsum(rng.normal(0.0, sd)))
    dates = pl.date_range(D("2000-01-03"), D("2000-01-03") + dt.timedelta(days=n - 1), "1d", eager=True)
    return pl.DataFrame({"date": dates, "close": close, "vix": 10 + 600 * sd})


def test_volatility_band_edges_and_missing_vix():
    vix = [None, 10.0, 14.99, 15.0, 24.9, 25.0, 34.99, 35.0, 80.0, float("nan")]
    out = pl.DataFrame({"vix": vix}).select(volatility_band(pl.col("vix"))).to_series().to_list()
    assert out == [None, "calm", "calm", "normal", "normal", "stressed", "stressed", "crisis", "crisis", None]


def test_trend_is_the_close_against_its_moving_average():
    close = [1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    out = pl.DataFrame({"close": close}).select(trend_state(pl.col("close"), 3)).to_series().to_list()
    # Averages of three: -, -, 2, 3, 4, 4.33, 4, 3, 2
    assert out == [None, None, "bull", "bull", "bull", "bear", "bear", "bear", "bear"]


def test_a_shift_needs_the_new_state_to_persist():
    states = ["calm"] * 6 + ["normal"] * 2 + ["calm"] * 3 + ["crisis"] * 4 + [None] + ["normal"] * 3
    days = [D("2020-01-01") + dt.timedelta(days=i) for i in range(len(states))]
    out = confirm_regime(pl.DataFrame({"date": days, "state": states}), persistence=3)
    # calm is the regime once it has held 3 days (row 2); the 2-day normal blip is no shift, nor is
    # calm's return; crisis is confirmed on its 3rd day (row 13), normal after the gap on row 18.
    expected = [None, None] + ["calm"] * 11 + ["crisis"] * 5 + ["normal"]
    assert out["regime"].to_list() == expected
    assert out["regime_since"][2] == days[0] and out["regime_since"][12] == days[0]
    found = shifts(out)
    assert found.columns == ["date", "since", "from_state", "to_state"]
    assert found.rows() == [
        (days[13], days[11], "calm", "crisis"),
        (days[18], days[16], "crisis", "normal"),
    ]
    assert shifts(confirm_regime(pl.DataFrame({"date": days, "state": states}), persistence=1)).height == 4
    with pytest.raises(ValueError, match="persistence=0"):
        confirm_regime(pl.DataFrame({"date": days, "state": states}), persistence=0)


def test_markov_state_walks_forward():
    daily = synthetic()
    returns = daily.select((pl.col("close") / pl.col("close").shift(1)).log())["close"]
    out = markov_state(daily["date"], returns, PLAN)
    assert out.columns == ["date", "p_calm", "p_normal", "p_stressed", "p_crisis", "ms_state", "fitted_on"]
    # Row 0 has no return: the first fit is on returns 1..500 and serves the rows after row 500.
    assert out["ms_state"][:501].null_count() == 501 and out["ms_state"][501:].null_count() == 0
    known = out[501:]
    assert (known["fitted_on"] < known["date"]).all()
    assert sorted(known["fitted_on"].unique().to_list()) == [daily["date"][i] for i in (500, 750, 1000, 1250)]
    total = known.select(pl.sum_horizontal("p_calm", "p_normal", "p_stressed", "p_crisis"))
    assert np.allclose(total.to_series().to_numpy(), 1.0)
    assert (known["p_stressed"] == 0).all()  # three states: calm, normal, crisis


@pytest.mark.parametrize("k", [3, 4])
def test_the_crisis_state_covers_the_high_variance_segments(k):
    out = regime_state(synthetic(), MarkovPlan(k=k, refit_days=250, min_history=500, fit_window=None), persistence=5)
    rows = pl.Series(range(out.height))
    for start, end in HIGH[1:]:
        share = out.filter(rows.is_between(start + 5, end - 1))["ms_state"].is_in(["stressed", "crisis"]).mean()
        assert share > 0.8, f"rows {start}-{end}: stressed/crisis on {share:.0%} only"
    quiet = out.filter(rows.is_between(501, 949) | rows.is_between(1106, 1299) | (rows > 1405))["ms_state"]
    assert (quiet == "crisis").mean() < 0.1
    if k == 4:
        assert out["p_stressed"].drop_nulls().max() > 0.5  # the fourth state has a name


def test_rows_up_to_a_day_do_not_depend_on_later_returns():
    daily = synthetic()
    t = 1100  # inside a refit block (rows 1001-1250) and at the end of a high-variance segment
    base = regime_state(daily, PLAN, persistence=5)
    rng = np.random.default_rng(99)
    later = daily["close"][t] * np.exp(np.cumsum(rng.normal(0.0, 0.03, daily.height - t - 1)))
    perturbed = daily.with_columns(pl.Series("close", [*daily["close"][: t + 1], *later]))
    changed = regime_state(perturbed, PLAN, persistence=5)
    cut = regime_state(daily.head(t + 1), PLAN, persistence=5)
    assert_frame_equal(changed.head(t + 1), base.head(t + 1), check_exact=True)
    assert_frame_equal(cut, base.head(t + 1), check_exact=True)
    # The perturbation does reach the state after t, so the equality above is no accident.
    assert not changed.slice(t + 1)["p_crisis"].equals(base.slice(t + 1)["p_crisis"])


def test_a_fit_that_does_not_converge_keeps_the_earlier_parameters(monkeypatch, caplog):
    fit, calls = regime._fit, []

    def flaky(model, plan):
        params, _ = fit(model, plan)
        calls.append(len(calls))
        return params, len(calls) not in (1, 3)  # the first and the third fit fail

    monkeypatch.setattr(regime, "_fit", flaky)
    daily = synthetic()
    with caplog.at_level(logging.WARNING, logger=regime.__name__):
        out = regime_state(daily, PLAN, persistence=5)
    assert len(calls) == 4 and len(caplog.records) == 2
    assert "no earlier fit" in caplog.records[0].getMessage()
    assert f"keep the parameters fitted on {daily['date'][750]}" in caplog.records[1].getMessage()
    # Block 1 has no Markov state (the VIX band stands in); block 3 uses block 2's parameters.
    assert out["ms_state"][501:751].null_count() == 250
    assert out["state"][501:751].to_list() == out["vol_band"][501:751].to_list()
    assert out["fitted_on"][751:1251].unique().to_list() == [daily["date"][750]]
    assert out["fitted_on"][1251:].unique().to_list() == [daily["date"][1250]]


def test_current_regime_reports_the_last_confirmed_state():
    out = regime_state(synthetic(), PLAN, persistence=5)
    now = current_regime(out)
    last = shifts(out).row(-1, named=True)
    assert now["date"] == out["date"][-1] and now["state"] == out["regime"][-1] == last["to_state"]
    assert now["since"] == last["since"]
    assert now["trend"] in ("bull", "bear") and now["vol_band"] in regime.STATES
    assert sum(now["probabilities"].values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty"):
        current_regime(out.head(0))


def test_the_plan_is_checked():
    with pytest.raises(ValueError, match="k=5"):
        MarkovPlan(k=5)
    with pytest.raises(ValueError, match="fit_window=300"):
        MarkovPlan(fit_window=300)
    with pytest.raises(ValueError, match="lacks"):
        regime_state(pl.DataFrame({"date": [D("2020-01-01")]}))


# --- Real data --------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("symbol", ["ES", "ZL"])
def test_real_2008_crisis_is_detected(real_data, symbol, record_property):
    vix = pl.read_csv(real_data / "fred" / "VIXCLS.csv", try_parse_dates=True).select(
        "date", pl.col("value").alias("vix")
    )
    # Front-month settlements, unadjusted across rolls: a roll gap is one outsized return.
    daily = (
        pl.read_csv(real_data / "daily" / f"{symbol}.csv", try_parse_dates=True)
        .select("date", "close")
        .join(vix, on="date", how="left")
    )
    started = time.perf_counter()
    out = regime_state(daily)
    seconds = time.perf_counter() - started
    crisis = out.filter(pl.col("date").is_between(D("2008-09-01"), D("2009-03-31")))
    coverage = (crisis["state"] == "crisis").mean()
    share = out["state"].is_in(["stressed", "crisis"]).mean()
    markov_share = out["ms_state"].drop_nulls().is_in(["stressed", "crisis"]).mean()
    found = shifts(out)
    print(
        f"\n{symbol}: {out.height} sessions in {seconds:.1f}s; crisis on {coverage:.0%} of Sep 2008-Mar 2009; "
        f"stressed/crisis on {share:.1%} of all days ({markov_share:.1%} of the days with a Markov state); "
        f"{found.height} confirmed shifts; now {current_regime(out)['state']}"
    )
    for name, value in (
        ("seconds", seconds),
        ("crisis_coverage_2008", coverage),
        ("stressed_crisis_share", share),
        ("shifts", found.height),
    ):
        record_property(f"{symbol}_{name}", round(value, 3))
    assert coverage > 0.5
    assert 0.05 < share < 0.5
    assert out["ms_state"][MarkovPlan().min_history + 1 :].null_count() == 0


def test_longer_horizons_need_a_change_to_last_longer():
    assert [persistence_for(n) for n in (0, 1, 5, 21, 63, 126, 252)] == [5, 5, 5, 5, 15, 21, 21]
    assert persistence_for(63, base=20) == 20 and persistence_for(252, longest=63) == 63
