"""Master feature tables: each asset's layer composed with the shared layer, point in time.

Daily tables (ZL 1d, MES 1d) join the shared layer on the session date; every shared value on a
date is one published by that session. Intraday MES tables (1min..4h) are keyed by the bar's
close `ts` and take, by as-of joins on that time, only what was known then: closed bars of the
higher timeframes, the closed minute's microstructure, and the daily and shared values of the
last session that had settled (17:00 Chicago).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import polars as pl

from cbi_assets.catalogue import DAILY_FRESHNESS, FUTURES, INTRADAY_TIMEFRAMES, TIMEFRAMES
from cbi_assets.features.bars import OHLCV, SESSION_MINUTES, resample, settled_at
from cbi_assets.features.equity_calendar import (
    calendar_features,
    calendar_table,
    session_features,
)
from cbi_assets.features.microstructure import (
    MINUTE_COLUMNS,
    microstructure_features,
    minute_microstructure,
)
from cbi_assets.features.soy_complex import seasonality_features, soy_complex_features
from cbi_assets.features.spec import FeatureSet, FeatureSpec
from cbi_assets.features.technical import (
    CORE,
    CORE_INTRADAY,
    DAILY,
    INTRADAY,
    technical_features,
)

# An intraday table is microstructure-heavy: of the daily layers it carries the volatility layer,
# the core of the MES daily technicals and these macro levels.
INTRADAY_SHARED_LAYERS = ("shared/volatility",)
INTRADAY_MACRO = (
    "ust_10y",
    "ust_2y",
    "curve_10y2y",
    "fed_funds",
    "hy_spread",
    "hy_spread_chg_5",
    "broad_dollar",
    "breakeven_10y",
    "policy_path",
    "real_10y",
    "dxy",
    "dxy_ret_1",
)
MIN_FEATURES = {"daily": 200, "intraday": 150}
# Markets whose daily core each asset's tables carry beside its own technicals.
RELATED = {"zl": ("zs", "zm", "cl", "ho"), "mes": ("zl", "cl", "ho")}


@dataclass
class Table:
    """A feature table: key columns, then feature columns described by `specs`."""

    frame: pl.DataFrame
    specs: list[FeatureSpec]
    keys: tuple[str, ...]

    @property
    def features(self) -> list[str]:
        return [s.name for s in self.specs]


def adjusted(prefix: str) -> list[pl.Expr]:
    """Roll-adjusted OHLC (returns never jump at a roll) and volume, as `<prefix>open`..."""
    return [(pl.col(x) * pl.col("adj")).alias(f"{prefix}{x}") for x in OHLCV[:4]] + [
        pl.col("volume").alias(f"{prefix}volume")
    ]


def finish(frame: pl.DataFrame, keys: list[str], specs: list[FeatureSpec]) -> Table:
    """Keys and features only, as Float32; NaN and infinities (0/0, x/0) become null."""
    features = [pl.when(pl.col(s.name).is_finite()).then(pl.col(s.name)).cast(pl.Float32).alias(s.name) for s in specs]
    return Table(frame.select(*keys, *features), list(specs), tuple(keys))


def daily_layer(symbol: str, continuous: dict[str, pl.DataFrame], related: tuple[str, ...], soy: bool = False) -> Table:
    """An asset's daily layer: its technicals, the core of related markets, and its own economics.

    `continuous` maps lower-case symbols to continuous front daily bars (see bars.front_daily).
    """
    frame = continuous[symbol].select("date", pl.col("close").alias(f"{symbol}_close"), *adjusted(f"{symbol}_adj_"))
    present = [other for other in related if other in continuous]
    for other in present:
        columns = continuous[other].select("date", pl.col("close").alias(f"{other}_close"), *adjusted(f"{other}_adj_"))
        # A market that did not settle that day keeps its last settlement (a zero return), for as long as it is
        # fresh: a market whose source stopped gives nulls, not a constant.
        frame = (
            frame.join(columns, on="date", how="left")
            .sort("date")
            .with_columns(pl.col(c).forward_fill(DAILY_FRESHNESS.sessions) for c in columns.columns if c != "date")
        )
    fs = FeatureSet(
        layer=symbol.upper(), source=f"{symbol.upper()} front settlement", timeframe="1d", lag="settled close"
    )
    technical_features(fs, f"{symbol}_adj_", f"{symbol}_1d", DAILY)
    for other in present:
        sub = FeatureSet(
            layer=symbol.upper(), source=f"{other.upper()} front settlement", timeframe="1d", lag="settled close"
        )
        technical_features(sub, f"{other}_adj_", f"{other}_1d", CORE)
        fs.extend(sub)
    if soy and all(s in continuous for s in ("zs", "zm", "cl", "ho")):
        soy_complex_features(fs)
        seasonality_features(fs, pl.col("date"))
    return finish(fs.prepare(frame.sort("date")).with_columns(fs.exprs), ["date"], fs.specs)


def daily_master(layer: Table, shared: list[Table], calendar: bool = False) -> Table:
    """The layer with the shared tables (and the equity calendar for MES) joined on the date."""
    frame, specs = layer.frame, list(layer.specs)
    if calendar:
        frame = frame.join(calendar_table(frame["date"]), on="date", how="left")
        sub = FeatureSet(layer=layer.specs[0].layer, source="exchange calendar", timeframe="1d", lag="known in advance")
        calendar_features(sub)
        specs += sub.specs
    for table in shared:
        frame = frame.join(table.frame, on="date", how="left")
        specs += table.specs
    frame = frame.with_columns(settled_at(pl.col("date")).alias("available_at"))
    return finish(frame.sort("date"), ["date", "available_at"], specs)


def shared_table(frame: pl.DataFrame, fs: FeatureSet) -> Table:
    return finish(fs.prepare(frame.sort("date")).with_columns(fs.exprs), ["date"], fs.specs)


def core_suffixes(windows=CORE) -> list[str]:
    probe = FeatureSet(layer="", source="", timeframe="1d", lag="")
    technical_features(probe, "", "x", windows)
    return [n.removeprefix("x_") for n in probe.names]


@dataclass
class IntradayContext:
    """What every intraday master table draws on, computed once.

    `bars` holds the MES bars of every timeframe; `micro` the 1-minute microstructure features keyed
    by their minute's close `ts_minute`; `higher` the core technicals of each intraday timeframe
    keyed by that bar's close; `settled` the daily MES and shared columns keyed by the time their
    session settled.
    """

    bars: dict[str, pl.DataFrame]
    micro: Table | None
    higher: dict[str, tuple[pl.DataFrame, list[FeatureSpec]]]
    settled: pl.DataFrame
    settled_specs: list[FeatureSpec]
    calendar: pl.DataFrame

    @property
    def sessions(self) -> pl.Series:
        return self.calendar["date"]


def higher_table(bars: pl.DataFrame, timeframe: str) -> tuple[pl.DataFrame, list[FeatureSpec]]:
    """The core technicals of a higher intraday timeframe's bars, keyed by each bar's close `ts_higher`."""
    sub = FeatureSet(layer="MES", source="MES 1-minute bars", timeframe=timeframe, lag=f"closed {timeframe} bar")
    technical_features(sub, "adj_", f"mes_{timeframe}", CORE_INTRADAY)
    frame = sub.prepare(bars.with_columns(adjusted("adj_"))).select(pl.col("ts").alias("ts_higher"), *sub.exprs)
    return finish(frame, ["ts_higher"], sub.specs).frame, sub.specs


def intraday_context(
    minutes: pl.DataFrame, micro: Table | None, mes_daily: Table, bars: dict[str, pl.DataFrame] | None = None
) -> IntradayContext:
    """`minutes` is the canonical 1-minute table, `micro` the 1-minute microstructure features and
    `mes_daily` the MES daily master; `bars` the resampled bars when they are at hand already."""
    bars = bars or {tf: resample(minutes, tf) for tf in INTRADAY_TIMEFRAMES}
    higher = {timeframe: higher_table(bars[timeframe], timeframe) for timeframe in INTRADAY_TIMEFRAMES[1:]}
    dates = bars["1min"]["trade_date"].unique().sort()
    return IntradayContext(bars, keyed_micro(micro), higher, *settled_columns(mes_daily), calendar_table(dates))


def keyed_micro(micro: Table | None) -> Table | None:
    """The 1-minute microstructure features keyed by their minute's close `ts_minute` (once, not per part)."""
    if micro is None:
        return None
    return Table(micro.frame.select(pl.col("ts").alias("ts_minute"), *micro.features), micro.specs, ("ts_minute",))


def settled_columns(mes_daily: Table) -> tuple[pl.DataFrame, list[FeatureSpec]]:
    """The MES daily master's columns an intraday table carries, keyed by when their session settled."""
    wanted = {f"{m}_1d_{s}" for m in ("mes", *RELATED["mes"]) for s in core_suffixes()} | set(INTRADAY_MACRO)
    carried = [s for s in mes_daily.specs if s.name in wanted or s.layer in INTRADAY_SHARED_LAYERS]
    return mes_daily.frame.select("available_at", *(s.name for s in carried)), carried


# Bars a chunk computes before its first row: the longest window, and enough for the slowest
# exponential average (alpha 1/30) to forget its start to 1e-7.
WARMUP_BARS = 500


def warmup_bars() -> int:
    """Bars of its own timeframe an intraday table's newest row depends on (to 1e-7 for the averages)."""
    return max(
        WARMUP_BARS,
        *(max(getattr(INTRADAY, f), default=0) for f in ("returns", "volatility", "sma", "high", "momentum", "shape")),
    )


def warmup_sessions(timeframe: str) -> int:
    return -(-warmup_bars() * TIMEFRAMES[timeframe] // SESSION_MINUTES) + 1


def intraday_master(context: IntradayContext, timeframe: str, first=None, last=None) -> Table:
    """The MES table of one intraday timeframe, keyed by bar close `ts`, for sessions [first, last].

    The timeframe's own technicals run over earlier sessions before `first` (warmup_sessions):
    enough for every window and for the exponential averages to forget where they started.
    """
    bars = context.bars[timeframe]
    if first is not None:
        # Bars are in time order, so a range of sessions is a slice.
        dates = context.sessions
        start = dates[max(dates.search_sorted(first) - warmup_sessions(timeframe), 0)]
        column = bars["trade_date"]
        lo, hi = column.search_sorted(start, side="left"), column.search_sorted(last, side="right")
        bars = bars.slice(lo, hi - lo)
    fs = FeatureSet(layer="MES", source="MES 1-minute bars", timeframe=timeframe, lag="closed bar")
    technical_features(fs, "adj_", f"mes_{timeframe}", INTRADAY)
    session_features(fs, TIMEFRAMES[timeframe])
    own = fs.prepare(bars.with_columns(adjusted("adj_"))).with_columns(fs.exprs)
    if first is not None:
        own = own.filter(pl.col("trade_date") >= first)
    keys = own.select("ts", "trade_date")
    blocks = [finish(own, ["ts_event", "ts", "trade_date"], fs.specs)]

    def beside(right: pl.DataFrame, right_on: str, specs: list[FeatureSpec]) -> None:
        """Join a block on the keys alone and set it beside the rest (no wide frame copied per join).

        Only the rows of `right` that can match are scanned: from the last one before this
        table's first row to its last row.
        """
        times = right[right_on]
        lo = max(times.search_sorted(keys["ts"][0], side="right") - 1, 0) if keys.height else 0
        hi = times.search_sorted(keys["ts"][-1], side="right") if keys.height else 0
        right = right.slice(lo, hi - lo)
        if right.height == keys.height and right[right_on].equals(keys["ts"]):
            # Row for row at the same times (the 1-minute bars and their microstructure): a slice is the join.
            blocks.append(Table(right.select(s.name for s in specs), specs, ()))
            return
        joined = keys.join_asof(right, left_on="ts", right_on=right_on, strategy="backward")
        blocks.append(Table(joined.select(s.name for s in specs), specs, ()))

    # Higher intraday timeframes: only bars that had closed by this bar's close.
    for higher in INTRADAY_TIMEFRAMES[INTRADAY_TIMEFRAMES.index(timeframe) + 1 :]:
        columns, higher_specs = context.higher[higher]
        beside(columns, "ts_higher", higher_specs)
    if context.micro is not None:
        beside(context.micro.frame, "ts_minute", context.micro.specs)
    # The last settled session's daily technicals (MES and its related markets) and shared layer.
    beside(context.settled, "available_at", context.settled_specs)
    sub = FeatureSet(layer="MES", source="exchange calendar", timeframe="1d", lag="known in advance")
    calendar_features(sub)
    calendar = keys.join(context.calendar, left_on="trade_date", right_on="date", how="left", maintain_order="left")
    blocks.append(finish(calendar, [], sub.specs))
    frame = pl.concat([b.frame for b in blocks], how="horizontal")
    return Table(frame, [s for b in blocks for s in b.specs], ("ts_event", "ts", "trade_date"))


# Rows per part: polars passes over columns of this length stay largely in cache (measured:
# 1-minute parts of 100 sessions build 25% faster than parts of 250).
PART_ROWS = 140_000


def intraday_master_parts(
    context: IntradayContext, timeframe: str, chunk_sessions: int | None = None
) -> list[Callable[[], Table]]:
    """The same table in parts of `chunk_sessions` sessions (by default about PART_ROWS rows), in
    time order, each a function that builds it: a long history never sits whole in memory."""
    dates = context.sessions
    chunk_sessions = chunk_sessions or max(1, PART_ROWS * TIMEFRAMES[timeframe] // SESSION_MINUTES)
    return [
        partial(intraday_master, context, timeframe, dates[i], dates[min(i + chunk_sessions, len(dates)) - 1])
        for i in range(0, len(dates), chunk_sessions)
    ]


# Rows a microstructure part computes before its first: more than its longest window (60 minutes)
# with the lags inside it.
MICRO_WARMUP_ROWS = 128


def microstructure_table(
    minutes: pl.DataFrame,
    trades: pl.DataFrame | None,
    tbbo: pl.DataFrame | None,
    book: pl.DataFrame | None,
    part_rows: int = PART_ROWS,
) -> Table:
    """1-minute microstructure features keyed like the minute bars; null where no ticks are stored.

    Built in parts of `part_rows` minutes, each after MICRO_WARMUP_ROWS earlier ones: a part's
    intermediate columns are a few hundred MB at most where the whole history's were several GB.
    """
    tick = FUTURES["MES"].tick_size
    per_minute = (
        minute_microstructure(trades, tbbo, book, tick)
        if trades is not None and tbbo is not None and book is not None
        else None
    )
    fs = FeatureSet(
        layer="MES/microstructure", source="MES trades, TBBO, MBP-10", timeframe="1min", lag="closed 1-minute bar"
    )
    microstructure_features(fs, tick)
    # Minute bars come sorted by time; sort only what is not (a sort copies every column).
    minutes = minutes if minutes["ts"].is_sorted() else minutes.sort("ts")

    def part(first: int) -> pl.DataFrame:
        start = max(first - MICRO_WARMUP_ROWS, 0)
        frame = minutes.slice(start, first + part_rows - start)
        if per_minute is not None:
            frame = frame.join(per_minute, on="ts_event", how="left", maintain_order="left")
        missing = [c for c in MINUTE_COLUMNS if c not in frame.columns]
        frame = frame.with_columns(pl.lit(None, pl.Float64).alias(c) for c in missing)
        built = finish(fs.prepare(frame).with_columns(fs.exprs), ["ts_event", "ts", "trade_date"], fs.specs)
        return built.frame.slice(first - start)

    # One chunk per column: concatenated parts leave the columns' chunks unaligned, and every later
    # select over them would copy the whole table to align them.
    frame = pl.concat([part(first) for first in range(0, max(minutes.height, 1), part_rows)], rechunk=True)
    return Table(frame, fs.specs, ("ts_event", "ts", "trade_date"))
