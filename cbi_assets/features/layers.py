"""The feature layers from their inputs, as plain functions (the assets, tests and benchmark call these).

Inputs: `continuous` maps lower-case futures symbols ("zl", "zs", ..., "es", "mes") to continuous
front daily bars; `series` maps FRED ids and Yahoo tickers to (`date`, `value`); `minutes` is the
canonical MES 1-minute table; `ticks` holds the raw MES trades, TBBO and MBP-10 records.
"""

from __future__ import annotations

import polars as pl

from cbi_assets.calendars import settlement_days
from cbi_assets.features.cross_asset import cross_asset_features
from cbi_assets.features.fx import PAIRS, fx_features
from cbi_assets.features.macro import INPUTS, macro_features
from cbi_assets.features.master import (
    RELATED,
    Table,
    daily_layer,
    daily_master,
    shared_table,
)
from cbi_assets.features.pit import RELEASE_LAGS, SAME_DAY, ReleaseLag, on_grid
from cbi_assets.features.volatility import volatility_features

SHARED_LAYERS = ("macro", "volatility", "fx", "cross_asset")
# The FRED series and Yahoo tickers each shared layer reads (every layer also reads the continuous
# daily bars of both markets: their sessions are its grid).
SHARED_SERIES = {
    "macro": INPUTS,
    "volatility": ["^VIX", "VIXCLS"],
    "fx": [key for _, key, _ in PAIRS.values()],
    "cross_asset": ["DX-Y.NYB", "DTWEXBGS"],
}


def session_grid(continuous: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Every settlement session from the first to the last daily bar, and any day a market settled."""
    days = pl.concat([f.select("date") for f in continuous.values() if f.height])
    sessions = pl.DataFrame({"date": settlement_days(days["date"].min(), days["date"].max())})
    return pl.concat([sessions, days]).unique().sort("date")


def shared_layer(
    name: str,
    continuous: dict[str, pl.DataFrame],
    series: dict[str, pl.DataFrame],
    lags: dict[str, ReleaseLag] = RELEASE_LAGS,
) -> Table:
    """One shared table; `lags` says when each FRED series is published (pit.RELEASE_LAGS)."""
    grid = session_grid(continuous)
    if name == "macro":
        return shared_table(*macro_features(grid, series, lags))
    if name == "volatility":
        # A VIX close from Yahoo is known at the close; FRED's copy is published a day later.
        if "^VIX" in series:
            vix, lag, source = series["^VIX"], SAME_DAY, "Yahoo ^VIX"
        else:
            vix, lag, source = series.get("VIXCLS"), lags["VIXCLS"], "FRED VIXCLS"
        return shared_table(*volatility_features(grid, vix, lag, source, continuous.get("mes"), continuous.get("zl")))
    if name == "fx":
        return shared_table(*fx_features(grid, series, lags))
    if name == "cross_asset":
        prices = {
            s: continuous[s].select("date", (pl.col("close") * pl.col("adj")).alias("px"))
            for s in ("zl", "cl", "ho", "mes")
            if s in continuous
        }
        source = ""
        for key, label in (("DX-Y.NYB", "Yahoo DX-Y.NYB"), ("DTWEXBGS", "FRED DTWEXBGS")):
            if key in series:
                lag = lags.get(key, SAME_DAY) if label.startswith("FRED") else SAME_DAY
                prices["dollar"], source = on_grid(grid, series[key], "value", lag, "px"), label
                break
        return shared_table(*cross_asset_features(grid, prices, source))
    raise ValueError(f"unknown shared layer {name!r}; layers: {SHARED_LAYERS}")


def layer_inputs(name: str, series: dict[str, pl.DataFrame]) -> tuple[list[str], list[str]]:
    """The futures symbols and the series keys a layer (shared, or a market's) takes its values from."""
    if name in RELATED:
        return [name, *RELATED[name]], []
    if name == "volatility":
        return ["mes", "zl"], ["^VIX"] if "^VIX" in series else ["VIXCLS"]
    if name == "cross_asset":
        dollar = next((k for k in ("DX-Y.NYB", "DTWEXBGS") if k in series), None)
        return ["zl", "cl", "ho", "mes"], [dollar] if dollar else []
    return [], list(SHARED_SERIES[name])


def asset_layer(asset: str, continuous: dict[str, pl.DataFrame]) -> Table:
    return daily_layer(asset, continuous, RELATED[asset], soy=asset == "zl")


def asset_master(asset: str, layer: Table, shared: list[Table]) -> Table:
    return daily_master(layer, shared, calendar=asset == "mes")
