"""Shared macro layer: rates, curve, policy path, dollar, inflation and credit, point in time."""

from __future__ import annotations

import polars as pl

from cbi_assets.features.pit import RELEASE_LAGS, ReleaseLag, on_grid
from cbi_assets.features.spec import FeatureSet

# FRED series of the layer and the name their features carry.
SERIES = {
    "DGS10": "ust_10y",
    "DGS2": "ust_2y",
    "T10Y2Y": "curve_10y2y",
    "DFF": "fed_funds",
    "DTWEXBGS": "broad_dollar",
    "T10YIE": "breakeven_10y",
    "BAMLH0A0HYM2": "hy_spread",
}
# Every series the macro features read: the daily ones above and the CPI (its inflation rates).
INPUTS = [*SERIES, "CPIAUCSL"]
CHANGES = (5, 21, 63)


def macro_features(
    grid: pl.DataFrame, fred: dict[str, pl.DataFrame], lags: dict[str, ReleaseLag] = RELEASE_LAGS
) -> tuple[pl.DataFrame, FeatureSet]:
    """Macro features on the session grid (`date`), each from values published by that session.

    `fred` maps a series id to its observations (`date`, `value`); absent series are skipped.
    """
    frame = grid.select("date")
    fs = FeatureSet(layer="shared/macro", source="FRED", timeframe="1d", lag="")
    for series_id, name in SERIES.items():
        if series_id not in fred:
            continue
        lag = lags[series_id]
        frame = on_grid(frame, fred[series_id], "value", lag, name)
        x, meta = pl.col(name), {"source": f"FRED {series_id}", "lag": lag.describe()}
        fs.add(f"{name}", x, f"{name.replace('_', ' ')} level", **meta)
        for n in CHANGES:
            fs.add(f"{name}_chg_{n}", x - x.shift(n), f"change of {name} over {n} sessions", n, **meta)
        fs.add(
            f"{name}_z_252", (x - x.rolling_mean(252)) / x.rolling_std(252), f"{name} z-score over a year", 252, **meta
        )
    if {"ust_10y", "breakeven_10y"} <= set(frame.columns):
        real = pl.col("ust_10y") - pl.col("breakeven_10y")
        meta = {"source": "FRED DGS10, T10YIE", "lag": lags["T10YIE"].describe()}
        fs.add("real_10y", real, "10-year real yield: nominal minus breakeven inflation", **meta)
        fs.add(
            "real_10y_chg_21", real - real.shift(21), "change of the 10-year real yield over 21 sessions", 21, **meta
        )
    if {"ust_2y", "fed_funds"} <= set(frame.columns):
        path = pl.col("ust_2y") - pl.col("fed_funds")
        meta = {"source": "FRED DGS2, DFF", "lag": lags["DGS2"].describe()}
        fs.add("policy_path", path, "2-year yield minus fed funds: the path the market prices for policy", **meta)
        fs.add(
            "policy_path_chg_21", path - path.shift(21), "change of the priced policy path over 21 sessions", 21, **meta
        )
    if "CPIAUCSL" in fred:
        frame = _inflation(frame, fred["CPIAUCSL"], lags["CPIAUCSL"], fs)
    return frame, fs


def _inflation(frame: pl.DataFrame, cpi: pl.DataFrame, lag: ReleaseLag, fs: FeatureSet) -> pl.DataFrame:
    """CPI rates computed on the monthly series, then placed when each month's print was known."""
    monthly = cpi.sort("date").with_columns(
        (pl.col("value") / pl.col("value").shift(12) - 1).alias("yoy"),
        ((pl.col("value") / pl.col("value").shift(1)) ** 12 - 1).alias("mom_ann"),
        ((pl.col("value") / pl.col("value").shift(3)) ** 4 - 1).alias("three_month_ann"),
    )
    meta = {"source": "FRED CPIAUCSL", "lag": lag.describe()}
    for column, text in (
        ("yoy", "CPI inflation over 12 months"),
        ("mom_ann", "CPI inflation of the latest month, annualised"),
        ("three_month_ann", "CPI inflation over 3 months, annualised"),
    ):
        frame = on_grid(frame, monthly, column, lag, f"cpi_{column}")
        fs.add(f"cpi_{column}", pl.col(f"cpi_{column}"), text, **meta)
    return frame
