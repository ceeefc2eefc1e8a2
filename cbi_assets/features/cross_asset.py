"""Shared cross-asset layer: how ZL moves with energy, equities and the dollar."""

from __future__ import annotations

import polars as pl

from cbi_assets.catalogue import DAILY_FRESHNESS
from cbi_assets.features.spec import FeatureSet

WINDOWS = (21, 63, 252)


def cross_asset_features(
    grid: pl.DataFrame, prices: dict[str, pl.DataFrame], dollar_source: str
) -> tuple[pl.DataFrame, FeatureSet]:
    """Rolling correlation and beta of ZL's daily returns against each other market.

    `prices` maps "zl", "cl", "ho", "mes", "dollar" to (`date`, `px`): roll-adjusted
    settlements, and for the dollar its index as known on that session. MES settles at the
    E-mini's price, so ZL against MES is also ZL against ES.
    """
    frame = grid.select("date")
    for name, series in prices.items():
        # A market that did not settle that day keeps its last settlement (a zero return), for as long as it is
        # fresh: a market whose source stopped gives nulls, not a constant.
        frame = frame.join(series.select("date", pl.col("px").alias(f"{name}_px")), on="date", how="left").with_columns(
            pl.col(f"{name}_px").forward_fill(DAILY_FRESHNESS.sessions)
        )
    returns = {name: (pl.col(f"{name}_px") / pl.col(f"{name}_px").shift(1)).log() for name in prices}
    fs = FeatureSet(layer="shared/cross_asset", source="", timeframe="1d", lag="settled close")
    if "zl" not in returns:
        return frame, fs
    zl = returns["zl"]
    for other in ("cl", "ho", "mes", "dollar"):
        if other not in returns:
            continue
        x = returns[other]
        source = f"ZL and {dollar_source}" if other == "dollar" else f"ZL and {other.upper()} front settlements"
        for n in WINDOWS:
            fs.add(
                f"zl_{other}_corr_{n}",
                pl.rolling_corr(zl, x, window_size=n),
                f"correlation of ZL and {other.upper()} daily returns over {n} sessions",
                n,
                source=source,
            )
            fs.add(
                f"zl_{other}_beta_{n}",
                pl.rolling_cov(zl, x, window_size=n) / x.rolling_var(n),
                f"beta of ZL daily returns on {other.upper()} returns over {n} sessions",
                n,
                source=source,
            )
    return frame, fs
