"""The compiled rolling moments equal polars' rolling statistics, missing values and flat windows included."""

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_series_equal

from cbi_assets.features.moments import Rolling, with_moments


def series(rows: int, seed: int, nulls: int = 0, flat: bool = False) -> pl.DataFrame:
    """Returns-like x, a price-like y at a high level, and a volume-like z."""
    rng = np.random.default_rng(seed)
    x = rng.standard_t(4, rows) * 1e-3
    y = 4000 + np.cumsum(rng.normal(0, 1, rows))
    z = rng.integers(0, 50, rows).astype(float)
    if flat:  # a quiet market: stretches of unchanged prices, so zero returns
        y = np.repeat(np.round(y[::25], 0), 25)[:rows]
        x = np.r_[np.nan, np.diff(np.log(y))]
    frame = pl.DataFrame({"x": x, "y": y, "z": z})
    if nulls:
        gaps = np.zeros(rows, bool)
        gaps[:nulls] = True
        gaps[rng.choice(np.arange(nulls, rows), nulls, replace=False)] = True
        frame = frame.with_columns(pl.when(~pl.Series(gaps)).then(pl.col(c)).alias(c) for c in ("x", "y"))
    if flat:
        frame = frame.with_columns(pl.col("x").fill_nan(None))
    return frame


REQUESTS = [Rolling("x", n, ("mean", "std", "skew", "kurt")) for n in (3, 20, 120)]
REQUESTS += [Rolling("y", 20, ("mean", "std")), Rolling("z", 5, ("std",)), Rolling("z", 5, ("mean",))]
REQUESTS += [Rolling("x", n, ("cov", "corr"), other="x_1") for n in (3, 30)]
REQUESTS += [Rolling("i", 30, ("cov",), other="y")]
REQUESTS += [Rolling("y", n, ("max", "min")) for n in (3, 7, 50)] + [
    Rolling("x", 20, ("max",)),
    Rolling("x", 20, ("min",)),
]


def computed(frame: pl.DataFrame) -> pl.DataFrame:
    inputs = {
        "x": pl.col("x"),
        "y": pl.col("y"),
        "z": pl.col("z"),
        "x_1": pl.col("x").shift(1),
        "i": pl.int_range(pl.len()),
    }
    return with_moments(frame, inputs, REQUESTS, "m_")


def reference() -> dict[str, pl.Expr]:
    x, y, z = pl.col("x"), pl.col("y"), pl.col("z")
    out = {}
    for n in (3, 20, 120):
        out |= {
            f"m_mean_x_{n}": x.rolling_mean(n),
            f"m_std_x_{n}": x.rolling_std(n),
            f"m_skew_x_{n}": x.rolling_skew(n),
            f"m_kurt_x_{n}": x.rolling_kurtosis(n),
        }
    out |= {
        "m_mean_y_20": y.rolling_mean(20),
        "m_std_y_20": y.rolling_std(20),
        "m_mean_z_5": z.rolling_mean(5),
        "m_std_z_5": z.rolling_std(5),
    }
    for n in (3, 30):
        out |= {
            f"m_cov_x_x_1_{n}": pl.rolling_cov(x, x.shift(1), window_size=n),
            f"m_corr_x_x_1_{n}": pl.rolling_corr(x, x.shift(1), window_size=n),
        }
    out["m_cov_i_y_30"] = pl.rolling_cov(pl.int_range(pl.len()).cast(pl.Float64), y, window_size=30)
    for n in (3, 7, 50):
        out |= {f"m_max_y_{n}": y.rolling_max(n), f"m_min_y_{n}": y.rolling_min(n)}
    return out | {"m_max_x_20": x.rolling_max(20), "m_min_x_20": x.rolling_min(20)}


@pytest.mark.parametrize(
    ("rows", "nulls", "flat"), [(2_000, 0, False), (2_000, 15, False), (3_000, 0, True), (40, 0, False), (2, 0, False)]
)
def test_compiled_moments_equal_the_polars_statistics(rows, nulls, flat):
    frame = series(rows, seed=rows + nulls, nulls=nulls, flat=flat)
    got = computed(frame)
    want = frame.select(**reference())
    assert set(want.columns) == set(got.columns) - set(frame.columns)
    for name in want.columns:
        # polars gives NaN or null for an undefined value, and may give a rounding residue where a
        # window is flat: both count as undefined on either side.
        expected = want[name].fill_nan(None)
        if "skew" in name or "kurt" in name or "corr" in name:
            expected = pl.select(pl.when(expected.abs() < 1e6).then(expected)).to_series()
        assert_series_equal(got[name].fill_nan(None), expected, check_names=False, rel_tol=1e-6, abs_tol=1e-9)
    if flat:  # flat windows exist, and have no deviation and no shape
        flat_rows = got["m_std_x_20"] == 0
        assert flat_rows.sum() > 100
        assert got.filter(flat_rows)["m_skew_x_20"].fill_nan(None).null_count() == flat_rows.sum()


def test_hand_checked_window():
    frame = pl.DataFrame({"x": [1.0, 2.0, 4.0, 8.0]})
    got = with_moments(frame, {"x": pl.col("x")}, [Rolling("x", 3, ("mean", "std", "skew", "kurt"))], "")
    last = got.row(-1, named=True)
    # Window 2, 4, 8: mean 14/3; deviations -8/3, -2/3, 10/3; population variance 56/9.
    assert last["mean_x_3"] == pytest.approx(14 / 3)
    assert last["std_x_3"] == pytest.approx(np.sqrt(56 / 9 * 3 / 2))
    m3 = ((-8 / 3) ** 3 + (-2 / 3) ** 3 + (10 / 3) ** 3) / 3
    assert last["skew_x_3"] == pytest.approx(m3 / (56 / 9) ** 1.5)
    assert np.isnan(got["mean_x_3"][1])  # two rows are not a window of three


def test_hand_checked_extremes():
    """Windows of 3 across the blocks the pass splits rows into, and a gap that spoils three windows."""
    frame = pl.DataFrame({"x": [5.0, 1.0, 4.0, 2.0, 9.0, 3.0, None, 7.0, 6.0, 8.0, 0.0]})
    got = with_moments(frame, {"x": pl.col("x")}, [Rolling("x", 3, ("max", "min"))], "").fill_nan(None)
    assert got["max_x_3"].to_list() == [None, None, 5.0, 4.0, 9.0, 9.0, None, None, None, 8.0, 8.0]
    assert got["min_x_3"].to_list() == [None, None, 1.0, 1.0, 2.0, 2.0, None, None, None, 6.0, 0.0]


def test_moments_are_causal_and_parts_equal_the_whole():
    frame = series(5_000, seed=9)
    later = frame.with_columns(
        pl.when(pl.int_range(pl.len()) >= 3_000).then(pl.col(c) * 1.7).otherwise(pl.col(c)).alias(c)
        for c in ("x", "y", "z")
    )
    whole, changed = computed(frame), computed(later)
    assert whole.head(3_000).equals(changed.head(3_000))
    assert not whole.tail(100).equals(changed.tail(100))
    part = computed(frame.slice(1_777)).slice(200)
    # Equal to rounding: the sums are taken about other values. The shape of a 3-row window is the
    # most sensitive (its kurtosis to about 1e-6); tables store Float32 (about 6e-8).
    for name in part.columns:
        assert_series_equal(part[name], whole[name].slice(1_977), check_names=False, rel_tol=1e-5, abs_tol=1e-10)


def test_unknown_statistics_are_refused():
    with pytest.raises(ValueError, match="statistics among"):
        with_moments(pl.DataFrame({"x": [1.0]}), {"x": pl.col("x")}, [Rolling("x", 5, ("median",))], "")


def test_technical_families_equal_their_polars_definitions():
    """The features read from the pass equal the expressions they replace, on bars with gaps."""
    import math

    from cbi_assets.features.spec import FeatureSet
    from cbi_assets.features.technical import (
        INTRADAY,
        bars_per_year,
        log_return,
        stochastic_k,
        technical_features,
    )

    rng = np.random.default_rng(11)
    rows = 1_500
    close = 4000 * np.exp(np.cumsum(rng.normal(0, 1e-3, rows)))
    bars = pl.DataFrame(
        {
            "open": close * (1 + rng.normal(0, 2e-4, rows)),
            "high": close * (1 + rng.uniform(0, 2e-3, rows)),
            "low": close * (1 - rng.uniform(0, 2e-3, rows)),
            "close": close,
            "volume": rng.integers(0, 400, rows),
        }
    )
    bars = bars.with_columns(pl.when(pl.int_range(pl.len()) % 397 != 5).then(pl.col("close")).alias("close"))
    fs = FeatureSet(layer="MES", source="bars", timeframe="5min", lag="closed bar")
    technical_features(fs, "", "t", INTRADAY)
    got = fs.apply(bars, [])

    o, h, l, c, v = (pl.col(x) for x in ("open", "high", "low", "close", "volume"))
    r1, year = log_return(c, 1), math.sqrt(bars_per_year("5min"))
    gk = 0.5 * (h / l).log().pow(2) - (2 * math.log(2) - 1) * (c / o).log().pow(2)
    want = {f"t_vol_{n}": r1.rolling_std(n) * year for n in INTRADAY.volatility}
    want |= {f"t_mom_z_{n}": log_return(c, n) / (r1.rolling_std(n) * math.sqrt(n)) for n in INTRADAY.momentum}
    for n in INTRADAY.shape:
        want |= {
            f"t_skew_{n}": r1.rolling_skew(n),
            f"t_kurt_{n}": r1.rolling_kurtosis(n),
            f"t_autocorr_{n}": pl.rolling_corr(r1, r1.shift(1), window_size=n),
            f"t_efficiency_{n}": (c - c.shift(n)).abs() / c.diff().abs().rolling_sum(n),
            f"t_parkinson_{n}": ((h / l).log().pow(2).rolling_mean(n) / (4 * math.log(2))).sqrt() * year,
            f"t_garman_klass_{n}": gk.rolling_mean(n).sqrt() * year,
            f"t_slope_{n}": pl.rolling_cov(pl.int_range(pl.len()).cast(pl.Float64), c.log(), window_size=n)
            / (n * (n + 1) / 12),
        }
    want |= {f"t_volume_z_{n}": (v - v.rolling_mean(n)) / v.rolling_std(n) for n in INTRADAY.volume}
    last = INTRADAY.volume[-1]
    want[f"t_obv_slope_{last}"] = (r1.sign() * v).rolling_sum(last) / v.rolling_sum(last)
    for n in INTRADAY.high:
        want |= {f"t_drawdown_{n}": c / c.rolling_max(n) - 1, f"t_above_low_{n}": c / c.rolling_min(n) - 1}
    stoch = stochastic_k(c, l.rolling_min(14), h.rolling_max(14))
    want |= {"t_stoch_k_14": stoch, "t_stoch_d_14": stoch.rolling_mean(3)}
    expected = bars.select(**want)
    for name in expected.columns:
        assert_series_equal(
            got[name].fill_nan(None), expected[name].fill_nan(None), check_names=False, rel_tol=1e-6, abs_tol=1e-9
        )
    assert got["t_skew_30"].fill_nan(None).null_count() < rows // 2  # the gaps leave most rows defined
