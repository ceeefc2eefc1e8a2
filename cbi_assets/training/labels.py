"""Forecast targets for each asset and horizon, and the weights of the rows that carry them.

Daily labels count sessions; intraday labels count clock minutes on the 1-minute table, so a gap
or the daily halt never stretches a horizon. A label at t uses no price after t + horizon.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import polars as pl


def direction(returns: pl.Expr) -> pl.Expr:
    """1 up, -1 down, 0 flat; null where the return is null."""
    return pl.when(returns > 0).then(1).when(returns < 0).then(-1).when(returns == 0).then(0).cast(pl.Int8)


# --- Daily ----------------------------------------------------------------------------------------


def daily_labels(prices: pl.DataFrame, bars: int) -> pl.DataFrame:
    """Forward log return, price and direction `bars` sessions ahead of each row of `prices`.

    `prices` holds `date`, `close` (the front contract) and `adj` (its roll factor). Returns come
    from `close * adj`, which does not jump at a roll; `forward_price` brings them back to today's
    contract, `close * exp(return)`. The last `bars` rows have no label.
    """
    if bars < 1:
        raise ValueError(f"daily_labels needs bars >= 1, got {bars}")
    level = pl.col("close") * pl.col("adj")
    forward = (level.shift(-bars) / level).log()
    return prices.select(
        "date",
        pl.col("date").shift(-bars).alias("label_end"),
        forward.alias("forward_return"),
        (pl.col("close") * forward.exp()).alias("forward_price"),
        direction(forward).alias("direction"),
    )


# --- Intraday -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Barriers:
    """Triple-barrier widths in units of sigma * sqrt(horizon minutes), sigma over `vol_window` bars."""

    profit: float = 2.0
    stop: float = 2.0
    vol_window: int = 60

    def __post_init__(self) -> None:
        if self.profit <= 0 or self.stop <= 0 or self.vol_window < 2:
            raise ValueError(f"barriers need profit > 0, stop > 0 and vol_window >= 2, got {self}")


def intraday_labels(
    minutes: pl.DataFrame, at: pl.Series | pl.DataFrame, horizon_minutes: int, barrier: Barriers = Barriers()
) -> pl.DataFrame:
    """Forward return and triple-barrier labels `horizon_minutes` of clock time after each time in `at`.

    `minutes` is the canonical 1-minute table (`ts` bar close, `high`, `low`, `close`, `adj`);
    `at` the label times (a feature table's `ts`). The price at t is the last close at or before
    t, the forward price the last close at or before t + horizon: a horizon ending in a gap or
    the halt takes the price the market last traded at. Labels whose horizon runs past the last
    bar are null, as are barrier columns without a full volatility window.
    """
    if horizon_minutes < 1:
        raise ValueError(f"intraday_labels needs horizon_minutes >= 1, got {horizon_minutes}")
    times = at["ts"] if isinstance(at, pl.DataFrame) else at.alias("ts")
    tdtype = minutes.schema["ts"]
    ts = minutes["ts"].to_physical().to_numpy()
    if not ts.size:
        raise ValueError("intraday_labels: the minute table is empty; there are no prices to label from")
    if not (np.diff(ts) > 0).all():
        raise ValueError(
            "intraday_labels needs minutes sorted by `ts` with one bar per ts; sort and deduplicate them first"
        )

    ends = (times.cast(tdtype) + dt.timedelta(minutes=horizon_minutes)).cast(tdtype)  # the sum comes back in us
    # Null times become 0 (before any bar) rather than NaN, which would round nanoseconds in float.
    t_phys = times.cast(tdtype).to_physical().fill_null(0).to_numpy()
    end_phys = ends.to_physical().fill_null(0).to_numpy()
    start = np.searchsorted(ts, t_phys, side="right") - 1  # the bar at (or last before) t
    stop = np.searchsorted(ts, end_phys, side="right") - 1  # the last bar within the horizon
    labelled = (start >= 0) & (end_phys <= ts[-1]) & times.is_not_null().to_numpy()

    level = (minutes["close"] * minutes["adj"]).to_numpy()
    safe_start, safe_stop = np.where(labelled, start, 0), np.where(labelled, stop, 0)
    forward = np.log(level[safe_stop] / level[safe_start])
    barrier_label, touch_row, barrier_return, armed = triple_barrier(
        minutes, safe_start, safe_stop, labelled, forward, horizon_minutes, barrier
    )

    out = pl.DataFrame(
        {
            "ts": times.cast(tdtype),
            "label_end": ends,
            "forward_return": forward,
            "close_t": minutes["close"].to_numpy()[safe_start],
            "barrier_label": barrier_label,
            "barrier_touch": pl.Series(ts[touch_row], dtype=pl.Int64).cast(tdtype),
            "barrier_return": barrier_return,
            "labelled": labelled,
            "armed": armed,
        }
    )
    when_labelled, when_armed = pl.when(pl.col("labelled")), pl.when(pl.col("armed"))
    return out.select(
        "ts",
        when_labelled.then(pl.col("label_end")).alias("label_end"),
        when_labelled.then(pl.col("forward_return")).alias("forward_return"),
        when_labelled.then(pl.col("close_t") * pl.col("forward_return").exp()).alias("forward_price"),
        direction(when_labelled.then(pl.col("forward_return"))).alias("direction"),
        when_armed.then(pl.col("barrier_label")).alias("barrier_label"),
        when_armed.then(pl.col("barrier_touch")).alias("barrier_touch"),
        when_armed.then(pl.col("barrier_return")).alias("barrier_return"),
    )


def triple_barrier(
    minutes: pl.DataFrame,
    start: np.ndarray,
    stop: np.ndarray,
    labelled: np.ndarray,
    forward: np.ndarray,
    horizon_minutes: int,
    barrier: Barriers,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Barrier label, touch row and realised return per label, and which labels have barriers.

    Label i sits at row start[i] and watches rows start[i]+1 .. stop[i]; `forward` is its return
    at the time barrier. Barriers stand at +-(profit, stop) * sigma * sqrt(horizon) around the
    adjusted close, sigma the std of the `vol_window` adjusted log returns up to t.
    """
    h = f"{horizon_minutes}m"
    bars = minutes.select(
        (pl.col("close") * pl.col("adj")).alias("level"),
        # Returns into t, gaps included: a label held over the halt bears that jump too.
        (pl.col("close") * pl.col("adj")).log().diff().rolling_std(barrier.vol_window).fill_null(np.nan).alias("sigma"),
        (pl.col("high") * pl.col("adj")).alias("high"),
        (pl.col("low") * pl.col("adj")).alias("low"),
        # Extremes of the horizon-long window ending at each bar; see the filter below.
        (pl.col("high") * pl.col("adj")).rolling_max_by("ts", h).alias("reach_high"),
        (pl.col("low") * pl.col("adj")).rolling_min_by("ts", h).alias("reach_low"),
    )
    sigma = bars["sigma"].to_numpy()[start]
    # A flat window gives the barriers no width to stand at.
    armed = labelled & (sigma > 0)
    width = sigma * math.sqrt(horizon_minutes)
    level = bars["level"].to_numpy()[start]
    upper, lower = level * np.exp(barrier.profit * width), level * np.exp(-barrier.stop * width)
    # The window (ts[stop] - h, ts[stop]] holds every bar of the horizon (t, t + h], so a label
    # whose window extremes stay inside both barriers ends on the time barrier unsearched; on
    # real data that is most of them.
    searched = armed & ((bars["reach_high"].to_numpy()[stop] >= upper) | (bars["reach_low"].to_numpy()[stop] <= lower))
    label = np.zeros(start.size, dtype=np.int8)
    touch = stop.copy()
    label[searched], touch[searched] = first_touch(
        start[searched],
        stop[searched],
        upper[searched],
        lower[searched],
        bars["high"].to_numpy(),
        bars["low"].to_numpy(),
    )
    realised = np.where(label == 1, barrier.profit * width, np.where(label == -1, -barrier.stop * width, forward))
    return label, touch, realised, armed


def first_touch(
    start: np.ndarray, stop: np.ndarray, upper: np.ndarray, lower: np.ndarray, high: np.ndarray, low: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which barrier each label meets first, and the row that meets it.

    Label i watches bars start[i]+1 .. stop[i] (the rows within its horizon). Rather than loop
    over labels, step every label forward one bar at a time; labels drop out of the working set
    once touched or past their horizon, so a step costs only the labels still open. Untouched
    labels end on the time barrier: 0 at row stop[i].
    """
    label = np.zeros(start.size, dtype=np.int8)
    touch = stop.copy()
    open_ = np.arange(start.size)
    o_start, o_stop, o_upper, o_lower = start, stop, upper, lower
    k = 0
    while open_.size:
        k += 1
        rows = o_start + k
        inside = rows <= o_stop
        if not inside.all():
            open_, rows, o_start, o_stop, o_upper, o_lower = (
                a[inside] for a in (open_, rows, o_start, o_stop, o_upper, o_lower)
            )
            if not open_.size:
                break
        hit_stop = low[rows] <= o_lower
        hit = hit_stop | (high[rows] >= o_upper)
        if hit.any():
            # A bar that spans both barriers hides which came first: count the stop (conservative).
            label[open_[hit]] = np.where(hit_stop[hit], -1, 1)
            touch[open_[hit]] = rows[hit]
            keep = ~hit
            open_, o_start, o_stop, o_upper, o_lower = (a[keep] for a in (open_, o_start, o_stop, o_upper, o_lower))
    return label, touch


# --- Overlap and weights --------------------------------------------------------------------------


def uniqueness(start: np.ndarray, end: np.ndarray, n: int) -> np.ndarray:
    """Average uniqueness of labels spanning rows (start[i], end[i]] of a grid of n rows.

    López de Prado: a row covered by c labels gives each of them 1/c; a label's uniqueness is the
    mean of that over its rows. Concurrency comes from a difference array, the per-label means
    from a prefix sum of 1/c. Labels with an empty span (end <= start) get NaN and count nowhere.
    """
    start, end = np.asarray(start, dtype=np.int64), np.asarray(end, dtype=np.int64)
    spans = end > start
    if spans.any() and (start[spans].min() < 0 or end[spans].max() >= n):
        raise ValueError(
            f"uniqueness: label spans must lie within rows 0..{n - 1}, got start {start[spans].min()}, "
            f"end {end[spans].max()}"
        )
    first, last = start[spans] + 1, end[spans]  # rows covered, inclusive
    concurrency = np.cumsum(np.bincount(first, minlength=n + 1) - np.bincount(last + 1, minlength=n + 1))[:n]
    share = np.concatenate(([0.0], np.cumsum(np.divide(1.0, concurrency, out=np.zeros(n), where=concurrency > 0))))
    out = np.full(start.size, np.nan)
    out[spans] = (share[last + 1] - share[first]) / (last - first + 1)
    return out


def label_uniqueness(times: pl.Series, label_end: pl.Series) -> pl.Series:
    """Uniqueness of labels made at `times` (sorted) and ending at `label_end`, on the grid of `times`.

    A label spans the rows after its own up to the last row at or before its end; null ends
    (unlabelled rows) give null and do not count towards any other label's concurrency. A label
    that ends before the next row (the last bar of a session, across the halt) shares no row with
    another label: uniqueness 1.
    """
    grid = times.to_physical().to_numpy()
    if grid.size and not (np.diff(grid) >= 0).all():
        raise ValueError("label_uniqueness needs `times` sorted ascending")
    ends = label_end.cast(times.dtype)
    start = np.searchsorted(grid, grid, side="right") - 1
    end = (
        np.searchsorted(grid, ends.to_physical().fill_null(grid.min() if grid.size else 0).to_numpy(), side="right") - 1
    )
    unlabelled = ends.is_null().to_numpy()
    end = np.where(unlabelled, start, end)
    shares = uniqueness(start, end, grid.size)
    return pl.Series("uniqueness", np.where(unlabelled, np.nan, np.nan_to_num(shares, nan=1.0))).fill_nan(None)


def sample_weights(dates: pl.Series, regimes: pl.DataFrame, uniqueness: pl.Series | None = None) -> pl.Series:
    """Each date's regime weight, times the label's uniqueness when given.

    `regimes` is a calendar of `regime`, `start`, `end` (null: open ended) and `weight`; the
    regimes must not overlap and together must cover every date.
    """
    if dates.dtype != pl.Date:
        raise TypeError(f"sample_weights needs dates of type Date, got {dates.dtype}; pass the trade date of each row")
    if dates.null_count():
        raise ValueError(f"sample_weights: {dates.null_count()} dates are null; every training row needs a date")
    calendar = regimes.select(
        "regime", pl.col("start").cast(pl.Date), pl.col("end").cast(pl.Date), pl.col("weight").cast(pl.Float64)
    ).sort("start", nulls_last=False)
    check_calendar(calendar)
    rows = (
        dates.alias("date")
        .to_frame()
        .with_row_index("row")
        .sort("date")
        .join_asof(calendar.with_columns(pl.col("start").fill_null(pl.date(1, 1, 1))), left_on="date", right_on="start")
        .sort("row")
    )
    uncovered = rows.filter(pl.col("regime").is_null() | (pl.col("date") > pl.col("end")))
    if uncovered.height:
        first = uncovered["date"].min()
        raise ValueError(
            f"sample_weights: {uncovered.height} dates fall in no regime, the first is {first}; "
            f"extend the regime calendar ({', '.join(calendar['regime'])}) to cover it"
        )
    weight = rows["weight"]
    if uniqueness is not None:
        if uniqueness.len() != dates.len():
            raise ValueError(f"sample_weights: uniqueness has {uniqueness.len()} rows, dates {dates.len()}")
        weight = weight * uniqueness.cast(pl.Float64)
    return weight.alias("weight")


def check_calendar(calendar: pl.DataFrame) -> None:
    """Raise if regimes (sorted by start) overlap, so each date has exactly one weight."""
    previous = calendar.select(
        "regime", "start", pl.col("regime").shift(1).alias("before"), pl.col("end").shift(1).alias("before_end")
    ).slice(1)
    clash = previous.filter(
        pl.col("start").is_null() | pl.col("before_end").is_null() | (pl.col("before_end") >= pl.col("start"))
    )
    if clash.height:
        row = clash.row(0, named=True)
        raise ValueError(
            f"regime calendar: {row['before']!r} (ending {row['before_end'] or 'never'}) overlaps {row['regime']!r} "
            f"(starting {row['start'] or 'at the beginning'}); each date must fall in exactly one regime"
        )
