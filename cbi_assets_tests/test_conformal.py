"""Conformal intervals: nominal coverage on data with known noise, widths that follow the volatility
when residuals are normalised, no look-ahead, and the latest-origin call agreeing with the walk."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from cbi_assets.ensembles.conformal import (
    Calibration,
    check_levels,
    conformal_quantiles,
    coverage,
    interval_at,
    level_name,
    volatility_scale,
    walk_forward_intervals,
    weighted_quantiles,
)

LEVELS = (0.8, 0.9)
PRODUCT = Calibration.of(1, 252)  # one-row labels, a year of 252 rows


def timeline(n: int, horizon: int, fold_rows: int):
    """Daily origins, their label ends `horizon` rows later, and consecutive folds."""
    dates = pl.date_range(dt.date(2000, 1, 3), dt.date(2000, 1, 3) + dt.timedelta(days=n + horizon - 1), eager=True)
    return dates[:n], dates[horizon : n + horizon], np.arange(n) // fold_rows


@pytest.mark.parametrize("calibration", [Calibration(), PRODUCT], ids=["equal weights", "product"])
def test_intervals_cover_at_the_nominal_rate_with_known_noise(calibration):
    # 6,000 independent rows (h = 1): 5,800 with an interval. Exchangeable scores give coverage of
    # at least the level and at most level + 1/(n + 1) per fold; the sampling sd of a share near 0.9
    # over 5,800 rows is 0.4 points, and folds sharing a quantile add some: 2 points is 5 sd. The
    # product's weights leave about 730 effective scores, and its normal prior is the truth here.
    rng = np.random.default_rng(3)
    n, h = 6000, 1
    origins, label_end, folds = timeline(n, h, 200)
    truth = rng.normal(0, 0.02, n)
    forecast = truth + rng.normal(0, 0.01, n)
    actual = truth
    lower, upper, _ = walk_forward_intervals(
        forecast, actual, np.full(n, 0.01), folds, label_end, origins, LEVELS, 50, calibration
    )
    have = np.isfinite(lower[:, 0])
    assert have.sum() == n - 200  # fold 0 has no matured scores; every later fold has 199 or more
    for i, level in enumerate(LEVELS):
        covered = np.mean((actual[have] >= lower[have, i]) & (actual[have] <= upper[have, i]))
        assert covered == pytest.approx(level, abs=0.02)
        # The half-width is the level's quantile of |N(0, 0.01)|: 1.28 and 1.64 sd.
        half = np.median((upper[have, i] - lower[have, i]) / 2)
        assert half == pytest.approx(0.01 * {0.8: 1.2816, 0.9: 1.6449}[level], rel=0.06)


def test_normalised_intervals_follow_the_volatility():
    # Calm and stressed blocks of 250 sessions (daily sd 1% and 4%); the forecast is no move, the
    # label the next session's return, and the scale the rolling volatility known at the origin.
    rng = np.random.default_rng(11)
    n, h = 6000, 1
    sd = np.where((np.arange(n) // 250) % 2 == 0, 0.01, 0.04)
    returns = rng.normal(0, sd)
    actual, forecast = np.r_[returns[1:], 0.0], np.zeros(n)
    origins, label_end, folds = timeline(n, h, 100)
    scale = volatility_scale(returns, h)
    lower, upper, _ = walk_forward_intervals(forecast, actual, scale, folds, label_end, origins, LEVELS, 50)
    flat_lower, flat_upper, _ = walk_forward_intervals(
        forecast, actual, np.ones(n), folds, label_end, origins, LEVELS, 50
    )
    # Rows well inside a block, so the 21-session window has caught up with its volatility.
    inside = (np.arange(n) % 250 >= 30) & np.isfinite(lower[:, 1]) & (np.arange(n) < n - 1)
    calm, stressed = inside & (sd == 0.01), inside & (sd == 0.04)
    width = upper[:, 1] - lower[:, 1]
    assert np.median(width[stressed]) / np.median(width[calm]) > 3.0

    def covered(lo, hi, rows):
        return np.mean((actual[rows] >= lo[rows, 1]) & (actual[rows] <= hi[rows, 1]))

    assert covered(lower, upper, calm) == pytest.approx(0.9, abs=0.03)
    assert covered(lower, upper, stressed) == pytest.approx(0.9, abs=0.03)
    # One width for all: far too wide when calm, too narrow when stressed.
    assert covered(flat_lower, flat_upper, calm) > 0.98 and covered(flat_lower, flat_upper, stressed) < 0.8


@pytest.mark.parametrize("calibration", [Calibration(), Calibration.of(5, 252)], ids=["equal weights", "product"])
def test_intervals_use_no_residual_that_had_not_matured(calibration):
    rng = np.random.default_rng(5)
    n, h = 900, 5
    origins, label_end, folds = timeline(n, h, 60)
    forecast, actual = rng.normal(0, 0.01, n), rng.normal(0, 0.02, n)
    scale = volatility_scale(rng.normal(0, 0.01, n), h)
    lower, upper, _ = walk_forward_intervals(
        forecast, actual, scale, folds, label_end, origins, LEVELS, 50, calibration
    )
    for t in (420, 431, 660):  # folds' first rows and a row inside a fold
        unknown = (label_end >= origins[t]).to_numpy()  # outcomes not known at t's close
        changed = np.where(unknown, actual * 7 + 0.3, actual)
        lower2, upper2, _ = walk_forward_intervals(
            forecast, changed, scale, folds, label_end, origins, LEVELS, 50, calibration
        )
        np.testing.assert_array_equal(lower2[: t + 1], lower[: t + 1])
        np.testing.assert_array_equal(upper2[: t + 1], upper[: t + 1])
        assert not np.allclose(
            np.nan_to_num(upper2[t + 61 :]), np.nan_to_num(upper[t + 61 :])
        )  # the change shows later


def test_volatility_scale_is_known_at_each_row():
    returns = np.tile([0.01, -0.01], 50)
    scale = volatility_scale(returns, 4)
    assert np.isnan(scale[:9]).all()  # half of the 21-row window
    assert scale[30] == pytest.approx(np.std(returns[10:31], ddof=1) * 2)
    later = returns.copy()
    later[61:] *= 10
    np.testing.assert_array_equal(volatility_scale(later, 4)[:61], scale[:61])
    assert np.isnan(volatility_scale(np.zeros(40), 1)[-1])  # no movement: no scale, hence no interval


@pytest.mark.parametrize("calibration", [Calibration(), Calibration.of(5, 252)], ids=["equal weights", "product"])
def test_interval_at_matches_the_walk_at_a_folds_first_origin(calibration):
    rng = np.random.default_rng(8)
    n, h = 500, 5
    origins, label_end, folds = timeline(n, h, 100)
    forecast, actual = rng.normal(0, 0.01, n), rng.normal(0, 0.02, n)
    scale = np.abs(rng.normal(0.02, 0.005, n))
    lower, upper, _ = walk_forward_intervals(
        forecast, actual, scale, folds, label_end, origins, LEVELS, 50, calibration
    )
    history = pl.DataFrame(
        {"origin": origins, "fold": folds, "label_end": label_end, "score": np.abs(actual - forecast) / scale}
    )
    t = 300
    latest = interval_at(float(forecast[t]), float(scale[t]), history, origins[t], LEVELS, 50, calibration)
    for i, level in enumerate(LEVELS):
        assert latest[level] == pytest.approx((lower[t, i], upper[t, i]))
    assert interval_at(0.0, 0.02, history, origins[40], LEVELS, 50) is None  # 35 matured scores are too few
    assert interval_at(0.0, float("nan"), history, origins[t], LEVELS, 50) is None


def test_equal_weights_give_mapies_split_conformal_quantile():
    rng = np.random.default_rng(4)
    for n in (50, 51, 199, 1000):
        scores = np.abs(rng.standard_t(3, n))
        np.testing.assert_allclose(weighted_quantiles(scores, np.ones(n), LEVELS), conformal_quantiles(scores, LEVELS))
        np.testing.assert_allclose(Calibration().quantiles(scores, LEVELS), conformal_quantiles(scores, LEVELS))


def test_weighted_quantile_by_hand():
    # Weights 1, 1, 2, 4 (total 8) and the new origin's 1 at +inf: cumulative shares of 9 are
    # 1/9, 2/9, 4/9 and 8/9 at the sorted scores 0.5, 1, 2, 3.
    scores, weights = np.array([3.0, 0.5, 2.0, 1.0]), np.array([4.0, 1.0, 2.0, 1.0])
    np.testing.assert_array_equal(
        weighted_quantiles(scores, weights, (0.2, 4 / 9, 0.5, 0.85, 0.9)), [1.0, 2.0, 3.0, 3.0, np.inf]
    )
    # Halving each year back: with a one-row half-life the newest score alone outweighs the rest.
    assert Calibration(half_life_rows=1.0).quantiles(np.array([9.0, 9.0, 9.0, 1.0, 2.0]), (0.4,))[0] == 2.0
    assert np.isnan(Calibration(half_life_rows=1.0).quantiles(np.array([9.0, 1.0]), (0.9,))[0])  # out of reach


def test_the_normal_prior_weighs_as_ten_outcomes_at_90_percent():
    scores = np.linspace(0.01, 3.0, 300)
    data = conformal_quantiles(scores, (0.9,))[0]
    # 300 equal-weight scores of a 30-row label are 10 outcomes: half data, half the normal 1.6449.
    shrunk = Calibration(horizon_rows=30, normal_prior=True).quantiles(scores, (0.9,))[0]
    assert shrunk == pytest.approx((data + 1.644854) / 2)
    # A 1-row label: 300 outcomes against the prior's 10.
    assert Calibration(normal_prior=True).quantiles(scores, (0.9,))[0] == pytest.approx(
        (300 * data + 10 * 1.644854) / 310
    )
    # At 80% the prior counts 5 outcomes, toward 1.2816.
    at80 = conformal_quantiles(scores, (0.8,))[0]
    assert Calibration(horizon_rows=30, normal_prior=True).quantiles(scores, (0.8,))[0] == pytest.approx(
        (10 * at80 + 5 * 1.281552) / 15
    )


def test_decaying_weights_follow_a_change_in_the_error_size():
    # Normalised errors grow threefold after a calm spell of 8 years. Three years later the last three
    # years hold 7/8 of the weight, and the weighted 90% quantile is within 10% of the new errors'
    # (3 x 1.645 = 4.93); the equal-weight one, 73% calm scores, is under two thirds of it.
    rng = np.random.default_rng(9)
    scores = np.abs(np.r_[rng.normal(0, 1, 2016), rng.normal(0, 3, 756)])
    weighted = Calibration(half_life_rows=252.0).quantiles(scores, (0.9,))[0]
    equal = Calibration().quantiles(scores, (0.9,))[0]
    assert weighted == pytest.approx(3 * 1.645, rel=0.1) and equal < 0.65 * 3 * 1.645


def test_levels_are_checked_and_named():
    assert check_levels([0.9, 0.8], 50) == (0.8, 0.9)
    assert [level_name(v) for v in (0.8, 0.9, 0.975)] == ["80", "90", "97_5"]
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        check_levels([0.9, 1.0], 50)
    with pytest.raises(ValueError, match="at least 19"):
        check_levels([0.95], 10)


def test_coverage_by_scope_by_hand():
    frame = pl.DataFrame(
        {
            "actual": [0.0, 0.5, -0.2, 0.1],
            "lo": [-0.1, -0.1, -0.1, None],
            "hi": [0.1, 0.1, 0.1, 0.2],
            "regime": ["a", "a", "b", "b"],
            "state": ["calm", "calm", "calm", "crisis"],
        }
    )
    table = coverage(frame, {("conformal", 0.8): ("lo", "hi")}, horizon_rows=2)
    overall = table.filter(pl.col("scope") == "overall").row(0, named=True)
    assert (overall["rows"], overall["coverage"], overall["mean_width"], overall["outcomes"]) == (
        3,
        pytest.approx(1 / 3),
        pytest.approx(0.2),
        1.5,
    )
    regime = dict(table.filter(pl.col("scope") == "regime").select("group", "coverage").iter_rows())
    assert regime == {"a": 0.5, "b": 0.0}  # b's second row has no interval
    assert table.filter(pl.col("scope") == "state")["group"].to_list() == ["calm"]


def garch_returns(rng: np.random.Generator, rows: int, tripled_from: int) -> np.ndarray:
    """GARCH(1,1) one-step returns (alpha 0.08, beta 0.9, Student t(6) shocks, 1% volatility) whose
    long-run volatility triples from row `tripled_from` on."""
    alpha, beta = 0.08, 0.9
    base = 0.01**2 * (1 - alpha - beta)
    shocks = rng.standard_t(6, rows) / np.sqrt(1.5)
    returns, variance = np.zeros(rows), 0.01**2
    for t in range(rows):
        if t:
            variance = base * (9 if t >= tripled_from else 1) + alpha * returns[t - 1] ** 2 + beta * variance
        returns[t] = np.sqrt(variance) * shocks[t]
    return returns


@pytest.mark.parametrize("h", [5, 21])
def test_intervals_hold_90_percent_after_volatility_triples(h):
    """The random walk's 90% interval on a series whose volatility triples at row 1,500: from 63
    matured labels after the break (three months of sessions) on, it covers 87-93% of the next 1,437
    origins in every seed, as the scale follows the new volatility and the level adapts to the misses."""
    n, brk, settled = 3000, 1500, 63
    for seed in range(4):
        rng = np.random.default_rng(seed)
        returns = garch_returns(rng, n + h, brk)
        forward = np.convolve(returns[1:], np.ones(h), "valid")[:n]  # the next h returns, known h rows later
        origins, label_end, folds = timeline(n, h, 21)  # a month's quantile per fold
        lower, upper, _ = walk_forward_intervals(
            np.zeros(n),
            forward,
            volatility_scale(returns[:n], h),
            folds,
            label_end,
            origins,
            LEVELS,
            50,
            Calibration.of(h, 252),
        )
        after = slice(brk + settled + h, n)
        inside = (forward[after] >= lower[after, 1]) & (forward[after] <= upper[after, 1])
        assert np.isfinite(lower[after, 1]).all()
        assert 0.87 <= inside.mean() <= 0.93, f"seed {seed}: {inside.mean():.3f} after the break"
