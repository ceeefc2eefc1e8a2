"""Bars the features are computed on: continuous front-month daily bars and MES bars per timeframe.

A continuous series keeps the real front-month prices (for levels such as the crush margin) and
an adjustment factor `adj` for returns across rolls. The factor is carried forward: on a roll day
it takes the ratio of the old contract's previous settlement to the new one's. So `close * adj`
never jumps at a roll, and unlike back-adjustment it uses no price from after the row's date.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from cbi_assets.calendars import trade_date
from cbi_assets.catalogue import EXCHANGE_TIMEZONE, GLOBEX_OPEN, TIMEFRAMES

OHLCV = ("open", "high", "low", "close", "volume")
SESSION_MINUTES = 1_380  # a Globex session: 17:00 to 16:00 Chicago
# Daily values are known once the session has settled (17:00 Chicago); FRED lags add to that.
SETTLED = dt.time(17, 0)


def settled_at(day: pl.Expr) -> pl.Expr:
    """UTC time a trade date's settlement is known: 17:00 Chicago on that date."""
    return (
        (day.cast(pl.Datetime("ns")) + pl.duration(hours=SETTLED.hour))
        .dt.replace_time_zone(EXCHANGE_TIMEZONE)
        .dt.convert_time_zone("UTC")
    )


def front_daily(bars: pl.DataFrame, fronts: pl.DataFrame | None) -> pl.DataFrame:
    """One row per trade date: the front contract's OHLC, the symbol's total volume, and `adj`.

    `bars` holds every contract's daily bars (`ts_event`, `instrument_id`, OHLCV); `fronts` the
    roll calendar of the symbol (`date`, `instrument_id`, `rolled`, `rolled_from`). Without
    contract ids (a front-month file) the bars are the series and `adj` stays 1.
    """
    daily = bars.with_columns(pl.col("ts_event").dt.date().alias("date"))
    volume = daily.group_by("date").agg(pl.col("volume").cast(pl.Float64).sum())
    if fronts is None or "instrument_id" not in daily.columns or daily["instrument_id"].null_count() == daily.height:
        series = daily.select("date", *OHLCV[:4]).with_columns(pl.lit(1.0).alias("adj"), pl.lit(False).alias("rolled"))
    else:
        ids = pl.col("instrument_id").cast(pl.Int64)
        prices = daily.select("date", ids.alias("instrument_id"), *OHLCV[:4])
        series = fronts.select("date", "instrument_id", "rolled", "rolled_from").join(
            prices, on=["date", "instrument_id"], how="inner"
        )
        # Previous settlements of both contracts on the day before each roll.
        before = prices.select(pl.col("date"), pl.col("instrument_id"), pl.col("close").alias("prior_close")).sort(
            "date"
        )
        series = series.sort("date").with_columns(pl.col("date").shift(1).alias("prior_date"))
        new = series.join(
            before, left_on=["prior_date", "instrument_id"], right_on=["date", "instrument_id"], how="left"
        )
        old = new.join(
            before.rename({"prior_close": "old_prior_close"}),
            left_on=["prior_date", "rolled_from"],
            right_on=["date", "instrument_id"],
            how="left",
        )
        step = (
            pl.when(pl.col("rolled"))
            .then(pl.col("old_prior_close") / pl.col("prior_close"))
            .otherwise(1.0)
            .fill_null(1.0)
        )
        series = old.sort("date").with_columns(step.cum_prod().alias("adj")).select("date", *OHLCV[:4], "adj", "rolled")
    return series.join(volume, on="date", how="left").sort("date").select("date", *OHLCV, "adj", "rolled")


def splice(before: pl.DataFrame, after: pl.DataFrame) -> pl.DataFrame:
    """`before` up to the first day of `after`, then `after`, continuous in `close * adj`.

    MES listed in May 2019: its daily history before then is the E-mini's, as a desk would use
    it. On MES's first day both settle, so `adj` is scaled there like at a roll.
    """
    if after.is_empty():
        return before
    first = after["date"].min()
    head = before.filter(pl.col("date") < first)
    both = before.filter(pl.col("date") == first)
    if head.is_empty() or both.is_empty():
        return pl.concat([head, after]).sort("date")
    scale = both["close"][0] * both["adj"][0] / (after["close"][0] * after["adj"][0])
    return pl.concat([head, after.with_columns(pl.col("adj") * scale)]).sort("date")


# --- MES bars from the canonical 1-minute table -------------------------------------------------


def minute_bars(raw: pl.DataFrame, adj_by_day: pl.DataFrame | None = None) -> pl.DataFrame:
    """The canonical 1-minute table: one row per traded minute of the front contract.

    `ts_event` is the bar's open, `ts` its close (when its values are known), `trade_date` the
    Globex session it belongs to and `session_minute` the minutes from that session's 17:00 open
    to the bar's open; `adj` comes from the daily roll calendar of the same market.
    """
    bars = (
        raw.select("ts_event", "instrument_id", *OHLCV)
        .sort("ts_event")
        .with_columns(
            (pl.col("ts_event") + pl.duration(minutes=1)).alias("ts"),
            trade_date(pl.col("ts_event")).alias("trade_date"),
            pl.col("volume").cast(pl.Float64),
        )
    )
    # Session opens for the few distinct dates, then plain arithmetic per row.
    opens = bars.select(pl.col("trade_date").unique()).with_columns(session_open(pl.col("trade_date")).alias("opened"))
    bars = (
        bars.join(opens, on="trade_date", how="left")
        .with_columns(
            ((pl.col("ts_event") - pl.col("opened")).dt.total_minutes()).cast(pl.Int32).alias("session_minute")
        )
        .drop("opened")
    )
    if adj_by_day is None:
        return bars.with_columns(pl.lit(1.0).alias("adj"))
    return bars.join(
        adj_by_day.select(pl.col("date").alias("trade_date"), "adj"), on="trade_date", how="left"
    ).with_columns(pl.col("adj").forward_fill().fill_null(1.0))


def session_open(day: pl.Expr) -> pl.Expr:
    """UTC open of the Globex session of a trade date: 17:00 Chicago the evening before."""
    return (
        (day.cast(pl.Datetime("ns")) - pl.duration(days=1) + pl.duration(hours=GLOBEX_OPEN.hour))
        .dt.replace_time_zone(EXCHANGE_TIMEZONE)
        .dt.convert_time_zone("UTC")
    )


def resample(minutes: pl.DataFrame, timeframe: str) -> pl.DataFrame:
    """Bars of `timeframe` from 1-minute bars, aligned to the session open.

    A bar's `ts` is its close: the end of its window, or the session close for the last,
    shorter bar of a session (e.g. the 3-hour 13:00-16:00 bar of the 4h timeframe).
    """
    if timeframe == "1min":
        return minutes
    span = TIMEFRAMES[timeframe] or SESSION_MINUTES  # 1d: the whole session
    columns = ["ts_event", "ts", "trade_date", "session_minute", "instrument_id", *OHLCV, "adj"]
    if minutes.is_empty():
        return minutes.select(columns)
    minutes = minutes if minutes["ts_event"].is_sorted() else minutes.sort("ts_event")
    # In time order a bar's minutes are one run of rows: its open and close are the run's first
    # and last rows, its high, low and volume reductions over the run (no hashing of keys).
    bucket = pl.col("session_minute") // span * span
    starts = minutes.select(
        ((pl.col("trade_date") != pl.col("trade_date").shift(1)) | (bucket != bucket.shift(1)))
        .fill_null(True)
        .arg_true()
    ).to_series()
    first = starts.to_numpy()
    last = pl.Series(np.append(first[1:], minutes.height) - 1)

    def reduced(ufunc, column: str, missing: float) -> np.ndarray:
        return ufunc.reduceat(minutes[column].fill_null(missing).to_numpy(), first)

    bars = pl.concat(
        [
            minutes.select("ts_event", "trade_date", "session_minute", "open")[starts],
            minutes.select("instrument_id", "close", "adj")[last],
            pl.DataFrame(
                {
                    "high": reduced(np.fmax, "high", np.nan),
                    "low": reduced(np.fmin, "low", np.nan),
                    "volume": reduced(np.add, "volume", 0.0),
                }
            ),
        ],
        how="horizontal",
    ).with_columns(bucket.alias("bucket"))
    # The bar opens at its window's start and closes at its end, or at the session close.
    opened = pl.col("ts_event") - pl.duration(minutes=pl.col("session_minute") - pl.col("bucket"))
    length = pl.min_horizontal(pl.lit(span), SESSION_MINUTES - pl.col("bucket"))
    return (
        bars.with_columns(opened.alias("ts_event"), pl.col("bucket").alias("session_minute"))
        .with_columns((pl.col("ts_event") + pl.duration(minutes=length)).alias("ts"))
        .select(columns)
    )
