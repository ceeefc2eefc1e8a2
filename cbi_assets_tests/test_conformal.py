"""Conformal intervals: nominal coverage on data with known noise, widths that follow the volatility
when residuals are normalised, no look-ahead, and the latest-origin call agreeing with the walk."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from cbi_assets.ensembles.conformal import (
    check_levels,
    coverage,
    interval_at,
    level_name,
    volatility_scale,
    walk_forward_intervals,
)

LEVELS = (0.8, 0.9)


def timeline(n: int, horizon: int, fold_rows: int):
    """Daily origins, their label ends `horizon` rows later, and consecutive folds."""
    dates = pl.date_range(dt.date(2000, 1, 3), dt.date(2000, 1, 3) + dt.timedelta(days=n + horizon - 1), eager=True)
    return dates[:n], dates[horizon:n + horizon], np.arange(n) // fold_rows


def test_intervals_cover_at_the_nominal_rate_with_known_noise():
    # 6,000 independent rows (h = 1): 5,800 with an interval. Exchangeable scores give coverage of
    # at least the level and at most level + 1/(n + 1) per fold; the sampling sd of a share near 0.9
    # over 5,800 rows is 0.4 points, and folds sharing a quantile add some: 2 points is 5 sd.
    rng = np.random.default_rng(3)
    n, h = 6000, 1
    origins, label_end, folds = timeline(n, h, 200)
    truth = rng.normal(0, 0.02, n)
    forecast = truth + rng.normal(0, 0.01, n)
    actual = truth
    lower, upper, _ = walk_forward_intervals(forecast, actual, np.ones(n), folds, label_end, origins, LEVELS, 50)
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
    flat_lower, flat_upper, _ = walk_forward_intervals(forecast, actual, np.ones(n), folds, label_end, origins,
                                                       LEVELS, 50)
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


def test_intervals_use_no_residual_that_had_not_matured():
    rng = np.random.default_rng(5)
    n, h = 900, 5
    origins, label_end, folds = timeline(n, h, 60)
    forecast, actual = rng.normal(0, 0.01, n), rng.normal(0, 0.02, n)
    scale = volatility_scale(rng.normal(0, 0.01, n), h)
    lower, upper, _ = walk_forward_intervals(forecast, actual, scale, folds, label_end, origins, LEVELS, 50)
    for t in (420, 431, 660):  # folds' first rows and a row inside a fold
        unknown = (label_end >= origins[t]).to_numpy()  # outcomes not known at t's close
        changed = np.where(unknown, actual * 7 + 0.3, actual)
        lower2, upper2, _ = walk_forward_intervals(forecast, changed, scale, folds, label_end, origins, LEVELS, 50)
        np.testing.assert_array_equal(lower2[:t + 1], lower[:t + 1])
        np.testing.assert_array_equal(upper2[:t + 1], upper[:t + 1])
        assert not np.allclose(np.nan_to_num(upper2[t + 61:]), np.nan_to_num(upper[t + 61:]))  # the change shows later


def test_volatility_scale_is_known_at_each_row():
    returns = np.tile([0.01, -0.01], 50)
    scale = volatility_scale(returns, 4)
    assert np.isnan(scale[:9]).all()  # half of the 21-row window
    assert scale[30] == pytest.approx(np.std(returns[10:31], ddof=1) * 2)
    later = returns.copy()
    later[61:] *= 10
    np.testing.assert_array_equal(volatility_scale(later, 4)[:61], scale[:61])
    assert np.isnan(volatility_scale(np.zeros(40), 1)[-1])  # no movement: no scale, hence no interval


def test_interval_at_matches_the_walk_at_a_folds_first_origin():
    rng = np.random.default_rng(8)
    n, h = 500, 5
    origins, label_end, folds = timeline(n, h, 100)
    forecast, actual = rng.normal(0, 0.01, n), rng.normal(0, 0.02, n)
    scale = np.abs(rng.normal(0.02, 0.005, n))
    lower, upper, _ = walk_forward_intervals(forecast, actual, scale, folds, label_end, origins, LEVELS, 50)
    history = pl.DataFrame({"label_end": label_end, "score": np.abs(actual - forecast) / scale})
    t = 300
    latest = interval_at(float(forecast[t]), float(scale[t]), history, origins[t], LEVELS, 50)
    for i, level in enumerate(LEVELS):
        assert latest[level] == pytest.approx((lower[t, i], upper[t, i]))
    assert interval_at(0.0, 0.02, history, origins[40], LEVELS, 50) is None  # 35 matured scores are too few
    assert interval_at(0.0, float("nan"), history, origins[t], LEVELS, 50) is None


def test_levels_are_checked_and_named():
    assert check_levels([0.9, 0.8], 50) == (0.8, 0.9)
    assert [level_name(v) for v in (0.8, 0.9, 0.975)] == ["80", "90", "97_5"]
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        check_levels([0.9, 1.0], 50)
    with pytest.raises(ValueError, match="at least 19"):
        check_levels([0.95], 10)


def test_coverage_by_scope_by_hand():
    frame = pl.DataFrame({
        "actual": [0.0, 0.5, -0.2, 0.1], "lo": [-0.1, -0.1, -0.1, None], "hi": [0.1, 0.1, 0.1, 0.2],
        "regime": ["a", "a", "b", "b"], "state": ["calm", "calm", "calm", "crisis"],
    })
    table = coverage(frame, {("conformal", 0.8): ("lo", "hi")}, horizon_rows=2)
    overall = table.filter(pl.col("scope") == "overall").row(0, named=True)
    assert (overall["rows"], overall["coverage"], overall["mean_width"], overall["outcomes"]) == (
        3, pytest.approx(1 / 3), pytest.approx(0.2), 1.5)
    regime = dict(table.filter(pl.col("scope") == "regime").select("group", "coverage").iter_rows())
    assert regime == {"a": 0.5, "b": 0.0}  # b's second row has no interval
    assert table.filter(pl.col("scope") == "state")["group"].to_list() == ["calm"]
