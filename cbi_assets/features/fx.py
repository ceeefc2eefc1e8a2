"""Shared FX layer: the dollar against the currencies that move soybean oil and equities."""

from __future__ import annotations

import math

import polars as pl

from cbi_assets.features.pit import RELEASE_LAGS, SAME_DAY, ReleaseLag, on_grid
from cbi_assets.features.spec import FeatureSet

# name: (source, id, invert). All are units of the other currency per dollar: up = stronger dollar.
PAIRS = {
    "usd_cny": ("FRED", "DEXCHUS", False),
    "usd_eur": ("FRED", "DEXUSEU", True),  # FRED quotes dollars per euro
    "usd_jpy": ("FRED", "DEXJPUS", False),
    "usd_brl": ("Yahoo", "BRL=X", False),
    "usd_myr": ("Yahoo", "MYR=X", False),
    "dxy": ("Yahoo", "DX-Y.NYB", False),
}
RETURNS = (1, 5, 21, 63)


def fx_features(
    grid: pl.DataFrame, series: dict[str, pl.DataFrame], lags: dict[str, ReleaseLag] = RELEASE_LAGS
) -> tuple[pl.DataFrame, FeatureSet]:
    """`series` maps a FRED id or Yahoo ticker to (`date`, `value`); pairs without a source are skipped."""
    frame = grid.select("date")
    fs = FeatureSet(layer="shared/fx", source="", timeframe="1d", lag="")
    for name, (source, key, invert) in PAIRS.items():
        if key not in series:
            continue
        lag = lags[key] if source == "FRED" else SAME_DAY
        observations = series[key].with_columns((1 / pl.col("value")) if invert else pl.col("value"))
        frame = on_grid(frame, observations, "value", lag, name)
        x, meta = pl.col(name), {"source": f"{source} {key}", "lag": lag.describe()}
        fs.add(name, x, f"{name.upper().replace('_', '/')} level", **meta)
        for n in RETURNS:
            fs.add(f"{name}_ret_{n}", (x / x.shift(n)).log(), f"log return of {name} over {n} sessions", n, **meta)
        fs.add(
            f"{name}_vol_21",
            (x / x.shift(1)).log().rolling_std(21) * math.sqrt(252),
            f"annualised volatility of {name} over 21 sessions",
            21,
            **meta,
        )
    return frame, fs
