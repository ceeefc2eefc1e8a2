"""MES order flow and liquidity: tick records aggregated to 1-minute rows, and features on them.

`minute_microstructure` turns Databento trades, TBBO and MBP-10 records into one row per minute,
bucketed by when each record was received, so a row holds only what was known at its minute's
close. `microstructure_features` adds the per-minute values, their rolling forms and bar-based
liquidity proxies to the 1-minute master table, from the current and earlier rows only.
"""

from __future__ import annotations

import math

import polars as pl

from cbi_assets.calendars import trade_date
from cbi_assets.features.moments import Rolling, with_moments
from cbi_assets.features.spec import FeatureSet

BOOK_LEVELS = 10
DEPTH_LEVELS = (1, 5, 10)
TRADE_COLUMNS = ("ts_recv", "price", "size", "side")
TBBO_COLUMNS = ("ts_recv", "price", "bid_px_00", "ask_px_00")
# Actions that change an MBP-10 book; a trade ('T') or fill ('F') record repeats the book as it is.
BOOK_ACTIONS = ("A", "C", "M", "R")

MINUTE_COLUMNS = (
    "ofi",
    "microprice_dev",
    "quoted_spread",
    "effective_spread",
    *(f"depth_imbalance_{k}" for k in DEPTH_LEVELS),
    "signed_volume",
    "buy_share",
    "trade_count",
    "quote_count",
    "mean_trade_size",
    "vwap",
)


def _level(side: str, field: str, level: int) -> str:
    return f"{side}_{field}_{level:02d}"


def book_columns() -> list[str]:
    """The MBP-10 columns the aggregation reads."""
    levels = [_level(s, "sz", i) for i in range(BOOK_LEVELS) for s in ("bid", "ask")]
    return ["ts_recv", "instrument_id", "action", "bid_px_00", "ask_px_00", *levels]


def minute_of(ts: pl.Expr) -> pl.Expr:
    """The minute a record is known in: its receive time truncated to the minute."""
    return ts.dt.truncate("1m").alias("ts_event")


def _when(condition: pl.Expr, value: pl.Expr) -> pl.Expr:
    """`value` where `condition` holds, else 0 (also where it is null)."""
    return pl.when(condition).then(value).otherwise(0.0)


def _per(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    """A ratio that is null, not infinite, where the denominator is 0."""
    return pl.when(denominator != 0).then(numerator / denominator)


def order_flow_imbalance() -> pl.Expr:
    """Cont-Kukanov-Stoikov OFI of each book state against the one before it (contracts).

    e_n = q^b_n 1{P^b_n >= P^b_n-1} - q^b_n-1 1{P^b_n <= P^b_n-1}
          - q^a_n 1{P^a_n <= P^a_n-1} + q^a_n-1 1{P^a_n >= P^a_n-1}.
    An empty side (null price) counts as a bid at -inf or an ask at +inf, so a side that empties
    withdraws its size and one that refills adds it. The first record of each session and
    instrument has no predecessor and gives 0. Reads `session`, `instrument_id` and the best level.
    """
    inf = float("inf")
    pb, pa = pl.col("bid_px_00").fill_null(-inf), pl.col("ask_px_00").fill_null(inf)
    qb, qa = pl.col("bid_sz_00").cast(pl.Float64), pl.col("ask_sz_00").cast(pl.Float64)

    def before(x: pl.Expr) -> pl.Expr:
        return x.shift(1).over("session", "instrument_id")

    # Without a predecessor every comparison is null, so every term, and e, is 0.
    return (
        _when(pb >= before(pb), qb)
        - _when(pb <= before(pb), before(qb))
        - _when(pa <= before(pa), qa)
        + _when(pa >= before(pa), before(qa))
    )


def _depth_imbalance(k: int) -> pl.Expr:
    bid = pl.sum_horizontal(pl.col(_level("bid", "sz", i)).cast(pl.Float64) for i in range(k))
    ask = pl.sum_horizontal(pl.col(_level("ask", "sz", i)).cast(pl.Float64) for i in range(k))
    total = bid + ask
    return pl.when(total > 0).then((bid - ask) / total).alias(f"depth_imbalance_{k}")


def _book_minutes(book: pl.DataFrame, tick_size: float) -> pl.DataFrame:
    """OFI, microprice deviation, quoted spread, quote count and end-of-minute depth per minute."""
    pb, pa = pl.col("bid_px_00"), pl.col("ask_px_00")
    qb, qa = pl.col("bid_sz_00").cast(pl.Float64), pl.col("ask_sz_00").cast(pl.Float64)
    mid = (pb + pa) / 2
    micro = pl.when(qb + qa > 0).then((pb * qa + pa * qb) / (qb + qa))
    states = (
        book.select(book_columns())
        .sort("ts_recv", maintain_order=True)  # receive order; records sharing a time keep theirs
        .with_columns(trade_date(pl.col("ts_recv")).alias("session"))
    )
    sizes = [_level(s, "sz", i) for i in range(BOOK_LEVELS) for s in ("bid", "ask")]
    return (
        states.select(
            minute_of(pl.col("ts_recv")),
            order_flow_imbalance().alias("ofi"),
            ((micro - mid) / tick_size).alias("microprice_dev"),
            ((pa - pb) / tick_size).alias("quoted_spread"),
            pl.col("action").is_in(BOOK_ACTIONS).alias("updates"),
            *sizes,
        )
        .group_by("ts_event")
        .agg(
            pl.col("ofi").sum(),
            pl.col("microprice_dev").mean(),
            pl.col("quoted_spread").mean(),
            pl.col("updates").sum().cast(pl.Int64).alias("quote_count"),
            pl.col(sizes).last(),  # the book at the minute's last state
        )
        .select(
            "ts_event",
            "ofi",
            "microprice_dev",
            "quoted_spread",
            "quote_count",
            *(_depth_imbalance(k) for k in DEPTH_LEVELS),
        )
    )


def _trade_minutes(trades: pl.DataFrame) -> pl.DataFrame:
    """Signed volume, buyer share, trade count, mean size and VWAP per minute, from aggressor sides."""
    size = pl.col("size").cast(pl.Float64)
    side = pl.col("side")
    volume, buys, sells = pl.col("volume"), pl.col("buys"), pl.col("sells")
    return (
        trades.select(minute_of(pl.col("ts_recv")), pl.col("price"), size, side)
        .group_by("ts_event")
        .agg(
            pl.len().cast(pl.Int64).alias("trade_count"),
            size.sum().alias("volume"),
            size.filter(side == "B").sum().alias("buys"),  # buyer-initiated: lifted the offer
            size.filter(side == "A").sum().alias("sells"),  # seller-initiated: hit the bid
            (pl.col("price") * size).sum().alias("notional"),
        )
        .select(
            "ts_event",
            (buys - sells).alias("signed_volume"),
            pl.when(volume > 0).then(buys / volume).alias("buy_share"),
            "trade_count",
            pl.when(pl.col("trade_count") > 0).then(volume / pl.col("trade_count")).alias("mean_trade_size"),
            pl.when(volume > 0).then(pl.col("notional") / volume).alias("vwap"),
        )
    )


def _spread_minutes(tbbo: pl.DataFrame, tick_size: float) -> pl.DataFrame:
    """Mean effective spread per minute: twice the distance of each trade from the mid before it."""
    mid = (pl.col("bid_px_00") + pl.col("ask_px_00")) / 2
    return (
        tbbo.select(
            minute_of(pl.col("ts_recv")),
            (2 * (pl.col("price") - mid).abs() / tick_size).alias("effective_spread"),
        )
        .group_by("ts_event")
        .agg(pl.col("effective_spread").mean())
    )


def minute_microstructure(
    trades: pl.DataFrame, tbbo: pl.DataFrame, book: pl.DataFrame, tick_size: float
) -> pl.DataFrame:
    """One row per minute with any tick record, keyed by `ts_event` = the minute's start (UTC).

    Each record counts in the minute its `ts_recv` falls in, so the row is known at that minute's
    close and joins the 1-minute OHLCV bar of the same stamp. The book is one instrument at a time
    (the continuous front); prices are in real units and spreads in ticks of `tick_size`.

    - `ofi`: Cont-Kukanov-Stoikov order-flow imbalance of consecutive MBP-10 best levels, summed
      over the minute (contracts; positive when bids build or asks withdraw).
    - `microprice_dev`: mean over the minute's book records of (microprice - mid) / tick, where
      microprice = (P^b q^a + P^a q^b) / (q^a + q^b) leans toward the thinner side.
    - `quoted_spread`: mean (P^a - P^b) / tick over the minute's book records.
    - `effective_spread`: mean 2 |trade price - mid before the trade| / tick, from TBBO.
    - `depth_imbalance_1/5/10`: (bid - ask) / (bid + ask) of the sizes on the top 1/5/10 levels
      of the minute's last book record.
    - `signed_volume`: buyer- minus seller-initiated contracts; `buy_share`: buyer-initiated
      share of all contracts traded; `trade_count`; `mean_trade_size`: contracts per trade;
      `vwap`: volume-weighted trade price.
    - `quote_count`: book-changing MBP-10 records (add, cancel, modify, clear).
    A minute with records of one kind but not another gets 0 for that kind's counts, volumes and
    OFI, and null for its means, ratios and depth.
    """
    parts = [
        _book_minutes(book, tick_size),
        _trade_minutes(trades.select(TRADE_COLUMNS)),
        _spread_minutes(tbbo.select(TBBO_COLUMNS), tick_size),
    ]
    minutes = pl.concat([p.select("ts_event") for p in parts]).unique()
    for part in parts:
        minutes = minutes.join(part, on="ts_event", how="left")
    zero_when_absent = {"ofi": 0.0, "signed_volume": 0.0, "trade_count": 0, "quote_count": 0}
    return (
        minutes.with_columns(pl.col(c).fill_null(v) for c, v in zero_when_absent.items())
        .select("ts_event", *MINUTE_COLUMNS)
        .sort("ts_event")
    )


# --- Features on the 1-minute master table --------------------------------------------------------


def corwin_schultz(high: pl.Expr, low: pl.Expr) -> pl.Expr:
    """Corwin-Schultz (2012) spread from two consecutive bars' highs and lows, as a fraction of price.

    Negative estimates (a range widened by volatility more than by the spread) are set to 0.
    """
    k = 3 - 2 * math.sqrt(2)
    beta = (high / low).log().pow(2) + (high.shift(1) / low.shift(1)).log().pow(2)
    gamma = (pl.max_horizontal(high, high.shift(1)) / pl.min_horizontal(low, low.shift(1))).log().pow(2)
    alpha = ((2 * beta).sqrt() - beta.sqrt()) / k - (gamma / k).sqrt()
    # 2 (e^a - 1) / (1 + e^a) = tanh(a / 2)
    return (2 * (alpha / 2).tanh()).clip(lower_bound=0)


def microstructure_features(fs: FeatureSet, tick_size: float, windows: tuple[int, ...] = (5, 15, 60)) -> None:
    """Order-flow and liquidity features on the 1-minute master table, added as `mes_1min_<feature>`.

    Reads the front contract's `open, high, low, close, volume` and the columns of
    `minute_microstructure` joined by minute (null where there were no ticks). Rolling values
    need a full window of rows, so they are null until one has passed.
    """
    name = "mes_1min"
    h, l, c, v = (pl.col(x) for x in ("high", "low", "close", "volume"))
    volume = v.cast(pl.Float64)
    ret = (c / c.shift(1)).log()
    change = c.diff()

    per_minute = {
        "ofi": "order-flow imbalance (Cont-Kukanov-Stoikov) of the best levels over the minute, contracts",
        "microprice_dev": "mean (microprice - mid) over the minute's book states, ticks",
        "quoted_spread": "mean quoted spread over the minute's book states, ticks",
        "effective_spread": "mean effective spread 2|trade price - mid| of the minute's trades, ticks",
        "depth_imbalance_1": "(bid - ask) / (bid + ask) size at the best level, book at the minute's close",
        "depth_imbalance_5": "(bid - ask) / (bid + ask) size over the top 5 levels, book at the minute's close",
        "depth_imbalance_10": "(bid - ask) / (bid + ask) size over the top 10 levels, book at the minute's close",
        "signed_volume": "buyer- minus seller-initiated contracts traded in the minute",
        "buy_share": "share of the minute's contracts that were buyer-initiated",
        "trade_count": "trades in the minute",
        "quote_count": "book updates (add, cancel, modify, clear) in the minute",
        "mean_trade_size": "mean contracts per trade in the minute",
    }
    for column, description in per_minute.items():
        fs.add(f"{name}_{column}", pl.col(column), description)
    fs.add(f"{name}_vwap_dev", _per(c, pl.col("vwap")) - 1, "close over the minute's trade VWAP, minus 1")

    # Rolling sums, means, deviations and covariances come from one compiled pass (moments.py);
    # a ratio of two windows' sums is the ratio of their means.
    inputs = {
        "ofi": pl.col("ofi"),
        "volume": volume,
        "signed_volume": pl.col("signed_volume"),
        "microprice_dev": pl.col("microprice_dev"),
        "depth_imbalance_5": pl.col("depth_imbalance_5"),
        "trades": pl.col("trade_count"),
        "ret": ret,
        "change": change,
        "change_lag": change.shift(1),
        "amihud": pl.when(volume > 0).then(ret.abs() / (volume * c)) * 1e10,
        "corwin_schultz": corwin_schultz(h, l) * c / tick_size,
        "tick_rule": ret.sign() * volume,
    }
    requests = [
        Rolling(x, n, ("mean",))
        for n in windows
        for x in ("ofi", "volume", "signed_volume", "microprice_dev", "depth_imbalance_5")
    ]
    requests += [Rolling("trades", 60, ("mean", "std"))] + [Rolling("trades", n, ("mean",)) for n in windows if n < 60]
    requests += [
        r
        for n in (15, 60)
        for r in (
            Rolling("ret", n, ("cov",), other="signed_volume"),
            Rolling("signed_volume", n, ("std",)),
            Rolling("tick_rule", n, ("mean",)),
            Rolling("volume", n, ("mean",)),
        )
    ]
    requests += [
        Rolling("change", 60, ("cov",), other="change_lag"),
        Rolling("amihud", 60, ("mean",)),
        Rolling("corwin_schultz", 30, ("mean",)),
    ]
    k = "__micro_"
    fs.steps.append(lambda frame: with_moments(frame, inputs, requests, k))

    def mean(x: str, n: int) -> pl.Expr:
        return pl.col(f"{k}mean_{x}_{n}")

    for n in windows:
        fs.add(f"{name}_ofi_sum_{n}", mean("ofi", n) * n, f"order-flow imbalance summed over {n} minutes, contracts", n)
        fs.add(
            f"{name}_ofi_norm_{n}",
            _per(mean("ofi", n), mean("volume", n)),
            f"order-flow imbalance over {n} minutes per contract traded",
            n,
        )
        fs.add(
            f"{name}_signed_volume_norm_{n}",
            _per(mean("signed_volume", n), mean("volume", n)),
            f"aggressor-signed volume over {n} minutes as a fraction of volume (-1 all sells, 1 all buys)",
            n,
        )
        fs.add(
            f"{name}_microprice_dev_mean_{n}",
            mean("microprice_dev", n),
            f"mean microprice deviation from mid over {n} minutes, ticks",
            n,
        )
        fs.add(
            f"{name}_depth_imbalance_5_mean_{n}",
            mean("depth_imbalance_5", n),
            f"mean top-5-level depth imbalance over {n} minutes",
            n,
        )

    # Trades per minute now, and over shorter windows, against the last hour's mean and spread.
    count = pl.col("trade_count").cast(pl.Float64)
    hour_mean, hour_std = mean("trades", 60), pl.col(f"{k}std_trades_60")
    fs.add(
        f"{name}_trade_intensity_z_60",
        _per(count - hour_mean, hour_std),
        "trades this minute, z-score against the last 60 minutes",
        60,
    )
    for n in (n for n in windows if n < 60):
        fs.add(
            f"{name}_trade_intensity_{n}_z_60",
            _per(mean("trades", n) - hour_mean, hour_std),
            f"mean trades per minute over {n} minutes, z-score against the last 60 minutes",
            60,
        )

    for n in (15, 60):
        # Kyle lambda: the least-squares slope of return on signed volume, price impact per contract.
        var = pl.col(f"{k}std_signed_volume_{n}").pow(2)
        fs.add(
            f"{name}_kyle_lambda_{n}",
            pl.when(var > 0).then(pl.col(f"{k}cov_ret_signed_volume_{n}") / var),
            f"Kyle lambda: slope of the 1-minute log return on signed volume over {n} minutes, per contract",
            n + 1,
        )
    # Roll (1984): 2 sqrt(max(0, -cov(dc_t, dc_t-1))), the population covariance (ddof 0) over the window.
    serial = pl.col(f"{k}cov_change_change_lag_60") * (59 / 60)
    fs.add(
        f"{name}_roll_spread_60",
        2 * (-serial).clip(lower_bound=0).sqrt() / tick_size,
        "Roll spread 2 sqrt(-cov(dc_t, dc_t-1)) from 1-minute closes over 60 minutes, ticks",
        62,
    )

    # Bar-based proxies: defined for every minute with a bar, ticks or not.
    fs.add(
        f"{name}_amihud_60",
        mean("amihud", 60),
        "Amihud illiquidity over 60 minutes: mean |1-minute return| in basis points per million of volume x close",
        61,
    )
    fs.add(
        f"{name}_corwin_schultz_30",
        mean("corwin_schultz", 30),
        "Corwin-Schultz two-bar high-low spread estimate, ticks, mean over 30 minutes",
        31,
    )
    for n in (15, 60):
        fs.add(
            f"{name}_tick_rule_volume_{n}",
            _per(mean("tick_rule", n), mean("volume", n)),
            f"tick-rule signed volume (sign of the close change x volume) over {n} minutes, fraction of volume",
            n + 1,
        )
