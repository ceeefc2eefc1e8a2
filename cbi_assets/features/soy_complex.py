"""ZL layer: the soybean crush, oil share, the biodiesel margin and the crop-year seasons.

Board crush margin in $/bu: a bushel of soybeans yields 11 lb of oil and 44 lb of meal, so
0.11 x ZL (cents/lb) + 0.022 x ZM ($/short ton) is the product value of a bushel in dollars,
less the soybeans at ZS / 100 ($/bu).
"""

from __future__ import annotations

import math

import polars as pl

from cbi_assets.features.spec import FeatureSet

OIL_LB_PER_BUSHEL = 11.0
MEAL_TONS_PER_BUSHEL = 44.0 / 2000  # 44 lb of meal in short tons
OIL_LB_PER_GALLON = 7.5  # biodiesel yield: about 7.5 lb of soybean oil per gallon


def oil_value(zl_cents_lb: pl.Expr) -> pl.Expr:
    """Soybean oil from one bushel, in $ (0.11 x cents/lb)."""
    return OIL_LB_PER_BUSHEL * zl_cents_lb / 100


def meal_value(zm_dollars_ton: pl.Expr) -> pl.Expr:
    """Soybean meal from one bushel, in $ (0.022 x $/short ton)."""
    return MEAL_TONS_PER_BUSHEL * zm_dollars_ton


def crush_margin(zl: pl.Expr, zm: pl.Expr, zs: pl.Expr) -> pl.Expr:
    """Board crush in $/bu: 0.022 x ZM + 0.11 x ZL - ZS / 100."""
    return meal_value(zm) + oil_value(zl) - zs / 100


def oil_share(zl: pl.Expr, zm: pl.Expr) -> pl.Expr:
    """Oil's part of the crush product value: oil / (oil + meal) per bushel."""
    return oil_value(zl) / (oil_value(zl) + meal_value(zm))


def boho(zl: pl.Expr, ho: pl.Expr) -> pl.Expr:
    """Soybean oil less heating oil in $/gal (ZL cents/lb x 7.5 / 100 - HO $/gal): biodiesel margin proxy."""
    return zl * OIL_LB_PER_GALLON / 100 - ho


def soy_complex_features(fs: FeatureSet) -> None:
    """On a table with the front settlements `zl_close`, `zs_close`, `zm_close`, `cl_close`, `ho_close`."""
    zl, zs, zm, cl, ho = (pl.col(f"{s}_close") for s in ("zl", "zs", "zm", "cl", "ho"))
    crush, share, spread = crush_margin(zl, zm, zs), oil_share(zl, zm), boho(zl, ho)
    fs.add("crush_margin", crush, "board crush margin, $/bu: 0.022 x ZM + 0.11 x ZL - ZS / 100", source="ZL, ZM, ZS")
    fs.add(
        "crush_margin_pct_252",
        (crush.rolling_rank(252) - 1) / 251,
        "percentile of the crush margin within the past year",
        252,
        source="ZL, ZM, ZS",
    )
    fs.add(
        "crush_margin_pct_1260",
        (crush.rolling_rank(1260) - 1) / 1259,
        "percentile of the crush margin within the past five years",
        1260,
        source="ZL, ZM, ZS",
    )
    fs.add(
        "crush_margin_z_63",
        (crush - crush.rolling_mean(63)) / crush.rolling_std(63),
        "crush margin z-score over 63 sessions",
        63,
        source="ZL, ZM, ZS",
    )
    for n in (5, 21):
        fs.add(
            f"crush_margin_chg_{n}",
            crush - crush.shift(n),
            f"change of the crush margin over {n} sessions, $/bu",
            n,
            source="ZL, ZM, ZS",
        )
    fs.add("oil_value_bu", oil_value(zl), "value of the oil in a bushel, $", source="ZL")
    fs.add("meal_value_bu", meal_value(zm), "value of the meal in a bushel, $", source="ZM")
    fs.add("oil_share", share, "oil share: oil value / (oil + meal value) per bushel", source="ZL, ZM")
    fs.add("oil_share_chg_21", share - share.shift(21), "change of the oil share over 21 sessions", 21, source="ZL, ZM")
    fs.add(
        "oil_share_z_252",
        (share - share.rolling_mean(252)) / share.rolling_std(252),
        "oil share z-score over a year",
        252,
        source="ZL, ZM",
    )
    fs.add("boho", spread, "BOHO spread, $/gal: ZL x 7.5 / 100 - HO (biodiesel margin proxy)", source="ZL, HO")
    fs.add("boho_chg_21", spread - spread.shift(21), "change of BOHO over 21 sessions, $/gal", 21, source="ZL, HO")
    fs.add(
        "boho_z_252",
        (spread - spread.rolling_mean(252)) / spread.rolling_std(252),
        "BOHO z-score over a year",
        252,
        source="ZL, HO",
    )
    ratio = zl / cl
    fs.add("zl_cl_ratio", ratio, "ZL (cents/lb) over CL ($/bbl): soybean oil priced against crude", source="ZL, CL")
    fs.add(
        "zl_cl_ratio_z_252",
        (ratio - ratio.rolling_mean(252)) / ratio.rolling_std(252),
        "ZL/CL ratio z-score over a year",
        252,
        source="ZL, CL",
    )
    fs.add("zs_zm_ratio", zs / 100 / meal_value(zm), "soybeans ($/bu) over the meal value of a bushel", source="ZS, ZM")


# Crop-year seasons, as (first, last) month-day, inclusive. The US marketing year starts on
# 1 September; Brazil's soybean year on 1 February, with its harvest.
SEASONS = {
    "us_planting": ((4, 20), (6, 15)),
    "us_weather_market": ((7, 1), (8, 31)),
    "us_harvest": ((9, 15), (11, 20)),
    "brazil_planting": ((9, 15), (12, 15)),
    "brazil_harvest": ((1, 15), (4, 30)),
    "argentina_harvest": ((4, 1), (6, 30)),
}


def seasonality_features(fs: FeatureSet, date: pl.Expr) -> None:
    day_of_year = date.dt.ordinal_day()
    month_day = date.dt.month().cast(pl.Int32) * 100 + date.dt.day().cast(pl.Int32)
    angle = 2 * math.pi * (day_of_year - 1) / 365.25
    meta = {"source": "calendar", "lag": "known in advance"}
    fs.add("season_sin", angle.sin(), "annual cycle: sine of the day of the year", **meta)
    fs.add("season_cos", angle.cos(), "annual cycle: cosine of the day of the year", **meta)
    for name, ((m1, d1), (m2, d2)) in SEASONS.items():
        fs.add(
            f"season_{name}",
            month_day.is_between(m1 * 100 + d1, m2 * 100 + d2).cast(pl.Int8),
            f"1 in the {name.replace('_', ' ')} ({m1}/{d1}-{m2}/{d2})",
            **meta,
        )
    fs.add(
        "us_crop_year_elapsed",
        ((date.dt.month() - 9) % 12 * 30.4 + date.dt.day()) / 365.25,
        "share of the US soybean marketing year (from 1 September) elapsed",
        **meta,
    )
    fs.add(
        "brazil_crop_year_elapsed",
        ((date.dt.month() - 2) % 12 * 30.4 + date.dt.day()) / 365.25,
        "share of Brazil's soybean year (from 1 February) elapsed",
        **meta,
    )
