"""The compiled pass of core indicators equals their polars definitions, nulls (NaN there) included."""

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_series_equal

from cbi_assets.features import technical as ta
from cbi_assets.features.kernels import CoreWindows, with_core

WINDOWS = CoreWindows(rsi=(2, 14), atr=(3, 14), ema=(5, 20), rolling=(3, 20), macd=((12, 26, 9), (3, 5, 2)))


def bars(rows: int, seed: int, nulls: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
    high, low = close * (1 + rng.uniform(0, 0.01, rows)), close * (1 - rng.uniform(0, 0.01, rows))
    frame = pl.DataFrame({"high": high, "low": low, "close": close})
    if nulls:  # a late start and missing values inside, as a related market's series can have
        gaps = np.zeros(rows, bool)
        gaps[:nulls] = True
        gaps[rng.choice(np.arange(nulls, rows), nulls, replace=False)] = True
        frame = frame.with_columns(pl.when(~pl.Series(gaps)).then(pl.col(c)).alias(c) for c in frame.columns)
    return frame


def reference(frame: pl.DataFrame) -> dict[str, pl.Expr]:
    h, l, c = pl.col("high"), pl.col("low"), pl.col("close")
    out = {f"k_rsi_{n}": ta.rsi(c, n) for n in WINDOWS.rsi}
    out |= {f"k_atr_{n}": ta.atr(h, l, c, n) for n in WINDOWS.atr}
    out |= {f"k_ema_{n}": ta.ema(c, n) for n in WINDOWS.spans()}
    out |= {f"k_mean_{n}": c.rolling_mean(n) for n in WINDOWS.rolling}
    out |= {f"k_std_{n}": c.rolling_std(n, ddof=0) for n in WINDOWS.rolling}
    for f, s, g in WINDOWS.macd:
        line = (ta.ema(c, f) - ta.ema(c, s)) / c
        out |= {
            f"k_macd_{f}_{s}_{g}": line,
            f"k_macd_signal_{f}_{s}_{g}": ta.ema(line, g),
            f"k_macd_hist_{f}_{s}_{g}": line - ta.ema(line, g),
        }
    return out


@pytest.mark.parametrize(("rows", "nulls"), [(400, 0), (400, 12), (30, 0), (5, 0), (1, 0)])
def test_compiled_pass_equals_the_polars_definitions(rows, nulls):
    frame = bars(rows, seed=rows + nulls, nulls=nulls)
    compiled = with_core(frame, "", WINDOWS, "k_")
    expected = frame.select(**reference(frame))
    assert set(expected.columns) == set(WINDOWS.names("k_"))
    for name in expected.columns:
        want = expected[name].fill_nan(None)
        assert_series_equal(compiled[name].fill_nan(None), want, check_names=False, rel_tol=1e-9, abs_tol=1e-9)
    # The pass defines values where the definition does, no fewer (windows fill as expected).
    assert compiled["k_rsi_14"].fill_nan(None).null_count() == expected["k_rsi_14"].fill_nan(None).null_count()


def test_compiled_pass_is_causal():
    frame = bars(300, seed=3)
    later = frame.with_columns(
        pl.when(pl.int_range(pl.len()) >= 200).then(pl.col(c) * 1.3).otherwise(pl.col(c)).alias(c)
        for c in frame.columns
    )
    before, after = (with_core(f, "", WINDOWS, "k_").head(200) for f in (frame, later))
    assert before.equals(after)
    assert not with_core(frame, "", WINDOWS, "k_").tail(100).equals(with_core(later, "", WINDOWS, "k_").tail(100))


def test_rolling_std_keeps_precision_at_high_price_levels():
    close = 1e6 + np.sin(np.arange(500)) * 1e-3  # a tiny variance on a large level
    frame = pl.DataFrame({"high": close, "low": close, "close": close})
    got = with_core(frame, "", CoreWindows(rolling=(20,)), "k_")["k_std_20"].fill_nan(None)
    want = frame.select(pl.col("close").rolling_std(20, ddof=0))["close"]
    assert_series_equal(got, want, check_names=False, rel_tol=1e-6)


def test_a_flat_window_has_zero_deviation_and_parts_equal_the_whole():
    rng = np.random.default_rng(5)
    close = 4000 + np.repeat(rng.integers(-40, 40, 400), rng.integers(1, 40, 400))[:6000] * 0.25
    frame = pl.DataFrame({"high": close, "low": close, "close": close})
    whole = with_core(frame, "", CoreWindows(rolling=(20,)), "k_")
    flat = pl.Series(close).rolling_max(20) == pl.Series(close).rolling_min(20)
    assert flat.sum() > 100 and (whole["k_std_20"].filter(flat) == 0).all()
    part = with_core(frame.slice(1234), "", CoreWindows(rolling=(20,)), "k_").slice(20)
    assert_series_equal(part["k_std_20"], whole["k_std_20"].slice(1254), check_names=False, rel_tol=1e-9, abs_tol=1e-9)
    assert_series_equal(part["k_mean_20"], whole["k_mean_20"].slice(1254), check_names=False, rel_tol=1e-12)
