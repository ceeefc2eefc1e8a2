"""What happened after each forecast: the realized return over its horizon, read from the lake.

Outcomes are computed exactly as the training labels are (`cbi_assets.training.labels`): daily
horizons count sessions on the roll-adjusted front contract, intraday horizons count clock
minutes on the canonical 1-minute table. A forecast is matured once its label is fully known.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from cbi_assets import lake as tables
from cbi_assets.catalogue import Horizon, Market
from cbi_assets.features.inputs import continuous_bars
from cbi_assets.lake import Lake
from cbi_assets.training import sets


def in_utc(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """`frame` with the timestamp `column` in UTC; a naive one is taken to be UTC already (DuckDB hands
    TIMESTAMPTZ over in the session's time zone, which need not be UTC)."""
    dtype = frame.schema[column]
    if not isinstance(dtype, pl.Datetime):
        raise TypeError(f"predictions column {column!r} must be a timestamp, got {dtype}")
    if dtype.time_zone is None:
        return frame.with_columns(pl.col(column).dt.replace_time_zone("UTC"))
    return frame.with_columns(pl.col(column).dt.convert_time_zone("UTC"))


def daily_prices(lake: Lake, market: Market) -> pl.DataFrame:
    """The front contract's sessions (`date`, `close`, `adj`) that `{market}/training/labels` reads."""
    bars = continuous_bars(lake, (market,))
    if market.key not in bars:
        raise ValueError(
            f"the {market} continuous bars hold no rows of symbol {market.key!r}; "
            f"rebuild {tables.CONTINUOUS.asset_key(market=market).to_user_string()}"
        )
    return bars[market.key].select("date", "close", "adj")


def minute_prices(lake: Lake) -> pl.DataFrame:
    """The canonical MES 1-minute table the intraday labels are computed on."""
    return lake.read(tables.BARS, columns=["ts", "high", "low", "close", "adj"], timeframe="1min").sort("ts")


def realized(lake: Lake, market: Market, horizon: Horizon, at: pl.Series) -> pl.Series:
    """The forward log return over `horizon` from each origin in `at` (UTC), null until it is known.

    Daily origins are session dates (any time of day maps to its UTC date); intraday origins are bar
    timestamps. An origin missing from the lake's sessions gets null: no price, no outcome.
    """
    if horizon.intraday:
        labels = sets.labels_for(horizon, minutes=minute_prices(lake), at=at)
        return labels["forward_return"].alias("actual_return")
    labels = sets.labels_for(horizon, daily=daily_prices(lake, market))
    origins = at.dt.date().alias("date").to_frame().with_row_index("row")
    joined = origins.join(labels.select("date", "forward_return"), on="date", how="left").sort("row")
    return joined["forward_return"].alias("actual_return")


def matured(history: pl.DataFrame, lake: Lake, market: Market, horizon: Horizon) -> pl.DataFrame:
    """`history`'s rows of `market` x `horizon` whose outcome is known in the lake, with
    `actual_return` (log return from as_of to the target, roll-adjusted as the labels) and
    `actual_price` (price * exp(actual_return)). Rows not yet matured are left out."""
    missing = [c for c in ("asset", "horizon", "as_of", "price") if c not in history.columns]
    if missing:
        raise ValueError(f"predictions history lacks column(s) {missing}; it has {history.columns}")
    rows = in_utc(history.filter((pl.col("asset") == market.symbol) & (pl.col("horizon") == horizon.name)), "as_of")
    if rows.is_empty():
        return rows.with_columns(
            pl.lit(None, pl.Float64).alias("actual_return"), pl.lit(None, pl.Float64).alias("actual_price")
        )
    out = rows.with_columns(realized(lake, market, horizon, rows["as_of"]))
    return out.filter(pl.col("actual_return").is_not_null()).with_columns(
        (pl.col("price") * pl.col("actual_return").exp()).alias("actual_price")
    )


TYPICAL_ORIGINS = 20_000


def typical_move(lake: Lake, market: Market, horizon: Horizon, until: dt.date | None = None) -> float | None:
    """The median |forward log return| of the horizon over the lake's history, counting only
    labels that had matured by `until` (default: all of them); None when there are none."""
    if horizon.intraday:
        minutes = minute_prices(lake)
        # A median needs no more than some 20,000 origins; years of minutes would only cost time.
        at = minutes["ts"].gather_every(max(1, minutes.height // TYPICAL_ORIGINS))
        labels = sets.labels_for(horizon, minutes=minutes, at=at)
        if until is not None:
            labels = labels.filter(pl.col("label_end").dt.date() <= until)
    else:
        labels = sets.labels_for(horizon, daily=daily_prices(lake, market))
        if until is not None:
            labels = labels.filter(pl.col("label_end") <= until)
    moves = labels["forward_return"].drop_nulls().abs()
    return float(moves.median()) if moves.len() else None
