"""Shared volatility layer: VIX and its regime bands, realised volatility of ES and ZL."""

from __future__ import annotations

import math

import polars as pl

from cbi_assets.catalogue import DAILY_FRESHNESS
from cbi_assets.features.pit import ReleaseLag, on_grid
from cbi_assets.features.spec import FeatureSet

# VIX bands the desk uses: calm, normal, stressed, crisis.
VIX_BANDS = (15.0, 25.0, 35.0)
EWMA_LAMBDAS = (0.94, 0.97)  # RiskMetrics daily decay and a slower one


def vix_band(vix: pl.Expr) -> pl.Expr:
    """0 calm (<15), 1 normal (15-25), 2 stressed (25-35), 3 crisis (>35)."""
    return pl.sum_horizontal(*(vix >= edge for edge in VIX_BANDS)).cast(pl.Int8)


def ewma_vol(returns: pl.Expr, decay: float) -> pl.Expr:
    """Annualised exponentially weighted volatility of daily returns (RiskMetrics)."""
    return returns.pow(2).ewm_mean(alpha=1 - decay, adjust=False, min_samples=20).sqrt() * math.sqrt(252)


def volatility_features(
    grid: pl.DataFrame,
    vix: pl.DataFrame | None,
    vix_lag: ReleaseLag,
    vix_source: str,
    es: pl.DataFrame | None,
    zl: pl.DataFrame | None,
) -> tuple[pl.DataFrame, FeatureSet]:
    """`vix` (`date`, `value`); `es` and `zl` continuous daily bars (`date`, `close`, `adj`)."""
    frame = grid.select("date")
    fs = FeatureSet(layer="shared/volatility", source=vix_source, timeframe="1d", lag=vix_lag.describe())
    if vix is not None:
        frame = on_grid(frame, vix, "value", vix_lag, "vix_level")
        v = pl.col("vix_level")
        change = (v / v.shift(1)).log()
        fs.add("vix", v, "VIX level")
        for n in (1, 5, 21):
            fs.add(f"vix_chg_{n}", (v / v.shift(n)).log(), f"log change of VIX over {n} sessions", n)
        fs.add("vix_pct_252", (v.rolling_rank(252) - 1) / 251, "percentile rank of VIX within the past year (0-1)", 252)
        fs.add("vix_z_63", (v - v.rolling_mean(63)) / v.rolling_std(63), "VIX z-score over 63 sessions", 63)
        fs.add("vix_band", vix_band(v), "VIX band: 0 calm <15, 1 normal 15-25, 2 stressed 25-35, 3 crisis >35")
        for n in (21, 63):
            fs.add(
                f"vix_vol_of_vol_{n}",
                change.rolling_std(n) * math.sqrt(252),
                f"volatility of VIX log changes over {n} sessions",
                n,
            )
    for symbol, bars in (("es", es), ("zl", zl)):
        if bars is None:
            continue
        frame = frame.join(
            bars.select("date", (pl.col("close") * pl.col("adj")).alias(f"{symbol}_px")), on="date", how="left"
        ).with_columns(pl.col(f"{symbol}_px").forward_fill(DAILY_FRESHNESS.sessions))
        r = (pl.col(f"{symbol}_px") / pl.col(f"{symbol}_px").shift(1)).log()
        meta = {"source": f"{symbol.upper()} front settlement", "lag": "settled close"}
        for decay in EWMA_LAMBDAS:
            fs.add(
                f"{symbol}_rv_ewma_{int(decay * 100)}",
                ewma_vol(r, decay),
                f"{symbol.upper()} realised volatility, EWMA of squared returns with decay {decay}, annualised",
                20,
                **meta,
            )
        fs.add(
            f"{symbol}_rv_pct_252",
            (ewma_vol(r, 0.94).rolling_rank(252) - 1) / 251,
            f"percentile rank of {symbol.upper()} EWMA volatility within the past year",
            272,
            **meta,
        )
    if vix is not None and es is not None:
        fs.add(
            "variance_premium",
            pl.col("vix_level") / 100 - ewma_vol((pl.col("es_px") / pl.col("es_px").shift(1)).log(), 0.94),
            "implied (VIX) minus realised ES volatility: the variance risk premium",
            20,
            source=f"{vix_source}, ES front settlement",
        )
    return frame, fs
