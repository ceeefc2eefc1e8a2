"""MES trades, top of book (TBBO) and 10-level book updates (MBP-10) inside the 1-minute bars.

Each minute's trades start at its open, touch its high and low, end at its close and add up to
its volume. The book leans toward where the price goes over the next minutes, and aggressors
lean the same way on unchanged ticks, so order-flow features have something true to find.
Everything within a session is vectorized; sessions draw from their own generators.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from cbi_assets.raw.dbn import empty_records
from cbi_assets.sample.intraday import pinned_paths
from cbi_assets.sample.shocks import session_rng

TICK_SCHEMAS = ("trades", "tbbo", "mbp-10")
BOOK_LEVELS = 10
_LOOKAHEAD_MINUTES = 5  # how far ahead the book's lean looks
_MEAN_QUOTES_PER_TRADE = 1.5
_CONTRACTS_PER_ORDER = 4.0  # to count the resting orders at a level
_FLAG_LAST = 128  # F_LAST: the last record of an exchange packet


def _trade_counts(share: np.ndarray, needed: np.ndarray, volume: np.ndarray, target: int) -> np.ndarray:
    """Trades per minute in proportion to `share`, at least `needed`, about `target` in all.

    Quiet minutes are lifted to the trades their open, high, low and close need; the busy ones
    give that back, so the total stays near the target whenever the target is reachable.
    """
    low, high = 0.0, float(target) * 4
    for _ in range(40):
        scale = (low + high) / 2
        if np.clip(np.rint(scale * share), needed, volume).sum() > target:
            high = scale
        else:
            low = scale
    return np.clip(np.rint(low * share), needed, volume).astype(np.int64)


def _split_volume(volume: np.ndarray, counts: np.ndarray, minute: np.ndarray, draw: np.ndarray) -> np.ndarray:
    """Positive trade sizes per minute that add up to the minute's volume; a few large prints."""
    weight = np.exp(0.9 * draw)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    spare = volume - counts  # every trade has at least one contract
    size = 1 + np.floor(spare[minute] * weight / np.add.reduceat(weight, starts)[minute]).astype(np.int64)
    # What rounding left over goes to each minute's largest trade.
    largest = np.flatnonzero(weight == np.maximum.reduceat(weight, starts)[minute])
    largest = largest[np.unique(minute[largest], return_index=True)[1]]
    size[largest] += volume - np.add.reduceat(size, starts)
    return size


def _trade_prices(bars: dict[str, np.ndarray], counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Trade prices in ticks: each minute a bridge from its open through its high and low to its close."""
    o, h, l, c = bars["open"], bars["high"], bars["low"], bars["close"]
    n_bars, last = len(o), counts - 1
    high_inside = (h != o) & (h != c)
    # The extremes not already at the open or close sit at distinct trades inside the minute.
    draws = rng.random((n_bars, 2))
    first = 1 + np.floor(draws[:, 0] * np.maximum(counts - 2, 1)).astype(np.int64)
    second = 1 + np.floor(draws[:, 1] * np.maximum(counts - 3, 1)).astype(np.int64)
    second = second + (second >= first)
    high_at = np.where(h == o, 0, np.where(h == c, last, first))
    low_at = np.where(l == o, 0, np.where(l == c, last, np.where(high_inside, second, first)))
    positions = np.stack([np.zeros(n_bars, np.int64), high_at, low_at, last], axis=1)
    order = np.argsort(positions, axis=1, kind="stable")

    minute = np.repeat(np.arange(n_bars), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    steps = np.maximum(0.5, (h - l) / (1.5 * np.sqrt(counts)))[minute] * rng.standard_normal(len(minute))
    steps[starts] = 0.0
    clock = (np.arange(len(minute)) - starts[minute]).astype(np.float64)
    return pinned_paths(
        counts,
        np.take_along_axis(positions, order, axis=1),
        np.take_along_axis(np.stack([o, h, l, c], axis=1), order, axis=1),
        clock,
        steps,
        l,
        h,
    )


def _aggressor_buys(price: np.ndarray, signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Upticks are bought and downticks sold, mostly; an unchanged price leans with the signal."""
    tick_move = np.sign(np.diff(price, prepend=price[0]))
    draw = rng.random((len(price), 2))
    leaning = draw[:, 0] < 0.5 + 0.3 * signal
    return np.where(tick_move > 0, draw[:, 1] > 0.08, np.where(tick_move < 0, draw[:, 1] < 0.08, leaning))


def _book_sizes(signal: np.ndarray, minute: np.ndarray, typical_size: float, rng: np.random.Generator):
    """Sizes of 10 levels a side before each trade: deeper levels hold more, and the book leans.

    A little information, buried in noise that persists through the minute as real books do. A
    print may exceed the displayed size at the touch (icebergs, implied liquidity), so the book
    is not made to cover it; that would tilt it against the aggressor.
    """
    n = len(signal)
    depth = np.arange(BOOK_LEVELS)[None, :]
    persistent = rng.standard_normal(minute.max() + 1)[minute]
    lean = np.clip(0.10 * signal + 0.25 * persistent + 0.15 * rng.standard_normal(n), -0.85, 0.85)
    lean = lean[:, None] * 0.7**depth
    base = 1.5 * typical_size * (1 + 0.45 * depth)
    bid = np.maximum(1, np.rint(base * np.exp(0.35 * rng.standard_normal((n, BOOK_LEVELS))) * (1 + lean)))
    ask = np.maximum(1, np.rint(base * np.exp(0.35 * rng.standard_normal((n, BOOK_LEVELS))) * (1 - lean)))
    return bid.astype(np.int64), ask.astype(np.int64)


def _strictly_increasing(ns: np.ndarray) -> np.ndarray:
    """Push each time past the one before it by at least a nanosecond."""
    step = np.arange(len(ns))
    return np.maximum.accumulate(ns - step) + step


def _event_times(minute_start_ns: np.ndarray, event_minute: np.ndarray, rng: np.random.Generator):
    """Event times inside their minutes, receive times after them, and sequence numbers.

    Both clocks strictly increase: Databento sends records in receive order, and a feed handler
    never receives a later message first.
    """
    n = len(event_minute)
    offsets = np.sort(rng.random(n) * 0.999 + event_minute) - event_minute  # sorted within each minute
    ts_event = _strictly_increasing(minute_start_ns[event_minute] + (offsets * 60e9).astype(np.int64))
    in_delta = (12_000 + rng.exponential(6_000, n)).astype(np.int64)
    latency = in_delta + (150_000 + rng.exponential(100_000, n)).astype(np.int64)
    ts_recv = _strictly_increasing(ts_event + latency)
    # The venue numbers every message, including ones this feed does not show.
    sequence = 1_000 + int(rng.integers(0, 100_000)) + np.cumsum(1 + rng.geometric(0.5, n))
    return ts_event, ts_recv, in_delta, sequence


def session_ticks(
    bars: pl.DataFrame, trades_per_session: int, seed: int, trade_date: dt.date, one_tick: int
) -> dict[str, np.ndarray]:
    """Trades, TBBO and MBP-10 records of one session from its 1-minute bars (integer ticks)."""
    rng = session_rng(seed, "MES.ticks", trade_date)
    columns = ("open", "high", "low", "close", "volume", "ts_event")
    arrays = {col: bars[col].to_numpy().astype(np.int64) for col in columns}
    o, h, l, c, volume = (arrays[k] for k in ("open", "high", "low", "close", "volume"))

    needed = 2 + ((h != o) & (h != c)) + ((l != o) & (l != c))  # trades to visit O, H, L and C
    share = volume / volume.sum() * np.exp(0.2 * rng.standard_normal(len(o)))
    counts = _trade_counts(share, needed, volume, trades_per_session)
    minute = np.repeat(np.arange(len(o)), counts)
    price = _trade_prices(arrays, counts, rng)
    size = _split_volume(volume, counts, minute, rng.standard_normal(len(price)))

    # Where the price is going: the close a few minutes ahead, against the trade, in typical moves.
    ahead = c[np.minimum(np.arange(len(c)) + _LOOKAHEAD_MINUTES, len(c) - 1)]
    signal = np.tanh((ahead[minute] - price) / max(1.0, float(np.std(ahead - c))))
    buy = _aggressor_buys(price, signal, rng)

    # The touch: the aggressor trades at it; the spread is a tick, two in thin minutes now and then.
    per_trade = volume / counts
    thin = per_trade[minute] < np.median(per_trade)
    spread = 1 + (rng.random(len(price)) < np.where(thin, 0.12, 0.03))
    best_bid = np.where(buy, price - spread, price)
    best_ask = np.where(buy, price, price + spread)
    bid_size, ask_size = _book_sizes(signal, minute, max(2.0, float(volume.sum() / len(price))), rng)

    # Book updates before each trade: each adds, cancels or modifies one level of one side.
    quotes = np.minimum(rng.poisson(_MEAN_QUOTES_PER_TRADE, len(price)), 4)
    trade_of_event = np.repeat(np.arange(len(price)), quotes + 1)
    is_trade = np.zeros(len(trade_of_event), dtype=bool)
    is_trade[np.cumsum(quotes + 1) - 1] = True
    times = _event_times(arrays["ts_event"], minute[trade_of_event], rng)
    draw = rng.random((len(trade_of_event), 3))
    on_bid = draw[:, 0] < 0.5
    level = np.minimum(np.floor(-np.log(1 - draw[:, 1]) / 0.6).astype(np.int64), BOOK_LEVELS - 1)
    action = np.where(draw[:, 2] < 0.45, b"A", np.where(draw[:, 2] < 0.85, b"C", b"M"))

    t = trade_of_event
    levels = np.arange(BOOK_LEVELS)[None, :]
    book = {
        "bid_px": (best_bid[t, None] - levels) * one_tick,
        "ask_px": (best_ask[t, None] + levels) * one_tick,
        "bid_sz": bid_size[t],
        "ask_sz": ask_size[t],
    }
    book["bid_ct"] = np.clip(np.rint(book["bid_sz"] / _CONTRACTS_PER_ORDER), 1, book["bid_sz"])
    book["ask_ct"] = np.clip(np.rint(book["ask_sz"] / _CONTRACTS_PER_ORDER), 1, book["ask_sz"])
    touched = np.arange(len(t)), level

    mbp = empty_records("mbp-10", len(t))
    mbp["instrument_id"] = int(bars["instrument_id"][0])
    mbp["ts_event"], mbp["ts_recv"], mbp["ts_in_delta"], mbp["sequence"] = times
    mbp["flags"] = _FLAG_LAST
    mbp["action"] = np.where(is_trade, b"T", action)
    mbp["side"] = np.where(is_trade, np.where(buy[t], b"B", b"A"), np.where(on_bid, b"B", b"A"))
    mbp["depth"] = np.where(is_trade, 0, level)
    mbp["price"] = np.where(
        is_trade, price[t] * one_tick, np.where(on_bid, book["bid_px"][touched], book["ask_px"][touched])
    )
    mbp["size"] = np.where(is_trade, size[t], np.where(on_bid, book["bid_sz"][touched], book["ask_sz"][touched]))
    for j in range(BOOK_LEVELS):
        for field, values in book.items():
            mbp[f"{field}_{j:02d}"] = values[:, j]
    return _trade_views(mbp[is_trade]) | {"mbp-10": mbp}


def _trade_views(trade_events: np.ndarray) -> dict[str, np.ndarray]:
    """The trades feed and TBBO (each trade with the touch before it) from the book's trade events."""
    trades = empty_records("trades", len(trade_events))
    tbbo = empty_records("tbbo", len(trade_events))
    shared = ("instrument_id", "ts_event", "ts_recv", "ts_in_delta", "sequence", "price", "size", "action", "side")
    for name in shared:
        trades[name] = trade_events[name]
        tbbo[name] = trade_events[name]
    for name in ("bid_px_00", "ask_px_00", "bid_sz_00", "ask_sz_00", "bid_ct_00", "ask_ct_00"):
        tbbo[name] = trade_events[name]
    return {"trades": trades, "tbbo": tbbo}


def tick_records(bars: pl.DataFrame, trades_per_session: int, seed: int, one_tick: int) -> dict[str, np.ndarray]:
    """Records of every schema in TICK_SCHEMAS for each session in `bars` (1-minute bars with trade_date)."""
    sessions = [
        session_ticks(session, trades_per_session, seed, session["trade_date"][0], one_tick)
        for session in bars.partition_by("trade_date", maintain_order=True)
    ]
    return {
        schema: np.concatenate([s[schema] for s in sessions]) if sessions else empty_records(schema, 0)
        for schema in TICK_SCHEMAS
    }
