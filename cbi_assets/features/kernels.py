"""The core indicators (exponential and Wilder averages, RSI, ATR, rolling mean and population
standard deviation, the MACD line, signal and histogram) of one instrument's bars, in a single compiled pass.

As polars expressions each indicator is a chain of passes (a difference, a clip, an average, a
division), each materializing a column. Here each indicator is one tight loop with its running
state in registers (a MACD's three averages share one), and the indicators run side by side on
the cores, all in one compiled call. The results equal polars' `ewm_mean(adjust=False,
min_samples=n)`, `rolling_mean(n)` and `rolling_std(n, ddof=0)` (tests compare them), including
where inputs are null (NaN here): an average starts at the first value, skips a missing one with
its weight decayed, and a rolling value is missing while its window holds a missing input. The
rolling mean and deviation are the rolling-moments loop (moments.py) with ddof 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import polars as pl

from cbi_assets.features.moments import POOL, _moments, place

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@numba.njit(inline="always", error_model="numpy")
def _step(state, weight, count, v, alpha):
    """One value into an adjust=False exponential average: (state, weight, count) after `v`.

    `weight` is the state's weight, (1 - alpha) after a value; a missing value (NaN) decays it a
    step more, so the next value weighs alpha against (1 - alpha)^2 (polars' ignore_nulls=False).
    """
    decay = 1.0 - alpha
    if np.isnan(v):
        return state, weight * decay, count
    if count == 0:
        return v, decay, 1
    if weight == decay:  # nothing missing since the last value: no division
        return state + alpha * (v - state), decay, count + 1
    return (weight * state + alpha * v) / (weight + alpha), decay, count + 1


@_jit
def _ewm(x, alpha, min_count, out):
    """Adjust=False exponential average of x into out, missing until `min_count` values are seen
    and wherever x is missing."""
    state, weight, count = 0.0, 1.0 - alpha, 0
    for i in range(x.size):
        state, weight, count = _step(state, weight, count, x[i], alpha)
        out[i] = state if count >= min_count and not np.isnan(x[i]) else np.nan


@_jit
def _ewm_clean(x, alpha, min_count, out):
    """`_ewm` for input without missing values: the same arithmetic, without its branches."""
    state = x[0]
    for i in range(x.size):
        state += alpha * (x[i] - state)
        out[i] = state
    out[: min(min_count - 1, x.size)] = np.nan


@_jit
def _rsi(close, n, out):
    """Wilder RSI: averages (alpha 1/n) of the close's rises and falls, in one loop."""
    alpha = 1.0 / n
    gain = loss = 0.0
    gain_w = loss_w = 1.0 - alpha
    gain_k = loss_k = 0
    out[0] = np.nan
    for i in range(1, close.size):
        change = close[i] - close[i - 1]
        up = max(change, 0.0) if not np.isnan(change) else np.nan
        down = max(-change, 0.0) if not np.isnan(change) else np.nan
        gain, gain_w, gain_k = _step(gain, gain_w, gain_k, up, alpha)
        loss, loss_w, loss_k = _step(loss, loss_w, loss_k, down, alpha)
        out[i] = 100.0 - 100.0 / (1.0 + gain / loss) if gain_k >= n and not np.isnan(change) else np.nan


@_jit
def _rsi_clean(close, n, out):
    """`_rsi` for closes without missing values."""
    alpha = 1.0 / n
    out[0] = np.nan
    if close.size < 2:
        return
    change = close[1] - close[0]
    gain, loss = max(change, 0.0), max(-change, 0.0)
    for i in range(1, close.size):
        change = close[i] - close[i - 1]
        if i > 1:
            gain += alpha * (max(change, 0.0) - gain)
            loss += alpha * (max(-change, 0.0) - loss)
        out[i] = 100.0 - 100.0 / (1.0 + gain / loss)
    out[: min(n, close.size)] = np.nan


@_jit
def _atr(high, low, close, n, out):
    """Wilder ATR: the average (alpha 1/n) of the true range, the largest of the defined ranges
    high - low, |high - previous close|, |low - previous close| (polars' max_horizontal skips nulls;
    the first bar has no previous close)."""
    alpha = 1.0 / n
    state, weight, count = 0.0, 1.0 - alpha, 0
    for i in range(close.size):
        tr = high[i] - low[i]
        if i > 0:
            up, down = abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1])
            if not np.isnan(up) and (np.isnan(tr) or up > tr):
                tr = up
            if not np.isnan(down) and (np.isnan(tr) or down > tr):
                tr = down
        state, weight, count = _step(state, weight, count, tr, alpha)
        out[i] = state if count >= n and not np.isnan(tr) else np.nan


@_jit
def _atr_clean(high, low, close, n, out):
    """`_atr` for bars without missing values."""
    alpha = 1.0 / n
    state = high[0] - low[0]
    out[0] = state
    for i in range(1, close.size):
        tr = max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        state += alpha * (tr - state)
        out[i] = state
    out[: min(n - 1, close.size)] = np.nan


@_jit
def _macd(close, fast, slow, span, out_fast, out_slow, out_signal, out_line, out_hist):
    """EMA fast, EMA slow, the MACD line (fast - slow) / close, its signal (the line's EMA over
    `span`, once the line exists) and the histogram (line - signal). One loop: the three averages'
    dependency chains overlap in the CPU."""
    a_fast, a_slow, a_signal = 2.0 / (fast + 1.0), 2.0 / (slow + 1.0), 2.0 / (span + 1.0)
    f, f_w, f_k = 0.0, 1.0 - a_fast, 0
    s, s_w, s_k = 0.0, 1.0 - a_slow, 0
    g, g_w, g_k = 0.0, 1.0 - a_signal, 0
    for i in range(close.size):
        c = close[i]
        f, f_w, f_k = _step(f, f_w, f_k, c, a_fast)
        s, s_w, s_k = _step(s, s_w, s_k, c, a_slow)
        missing = np.isnan(c)
        out_fast[i] = f if f_k >= fast and not missing else np.nan
        out_slow[i] = s if s_k >= slow and not missing else np.nan
        line = (out_fast[i] - out_slow[i]) / c
        g, g_w, g_k = _step(g, g_w, g_k, line, a_signal)
        out_signal[i] = g if g_k >= span and not np.isnan(line) else np.nan
        out_line[i] = line
        out_hist[i] = line - out_signal[i]


@_jit
def _macd_clean(close, fast, slow, span, out_fast, out_slow, out_signal, out_line, out_hist):
    """`_macd` for closes without missing values: the line starts at the slow average's first
    value, and the signal at the line's."""
    a_fast, a_slow, a_signal = 2.0 / (fast + 1.0), 2.0 / (slow + 1.0), 2.0 / (span + 1.0)
    f = s = close[0]
    g = 0.0
    start = max(fast, slow) - 1
    for i in range(close.size):
        c = close[i]
        f += a_fast * (c - f)
        s += a_slow * (c - s)
        line = (f - s) / c
        g = line if i == start else g + a_signal * (line - g)
        out_fast[i], out_slow[i], out_line[i], out_signal[i], out_hist[i] = f, s, line, g, line - g
    out_fast[: min(fast - 1, close.size)] = np.nan
    out_slow[: min(slow - 1, close.size)] = np.nan
    out_line[: min(start, close.size)] = np.nan
    out_signal[: min(start + span - 1, close.size)] = np.nan
    out_hist[: min(start + span - 1, close.size)] = np.nan


RSI, ATR, EMA, ROLLING, MACD = range(5)


# Relative single-core cost of each kind of task, measured on 5 million bars without missing
# values: the tasks are shared out so that every core gets about the same work.
COST = {RSI: 1.0, ATR: 1.0, EMA: 1.0, ROLLING: 1.6, MACD: 1.2}


@_jit
def _has_missing(x):
    for v in x:
        if np.isnan(v):
            return True
    return False


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _run(high, low, close, tasks, out):
    """Each task (kind, n1, n2, n3, row1..row5, core) on its core; the indicators are independent.

    Bars without a missing value (the usual case) take loops without the missing-value branches.
    """
    cores = tasks[:, 9].max() + 1 if tasks.shape[0] else 0
    clean_close = not _has_missing(close)
    clean_bars = clean_close and not _has_missing(high) and not _has_missing(low)
    for core in numba.prange(cores):
        for t in range(tasks.shape[0]):
            if tasks[t, 9] != core:
                continue
            kind, n1, n2, n3 = tasks[t, 0], tasks[t, 1], tasks[t, 2], tasks[t, 3]
            r1, r2, r3, r4, r5 = tasks[t, 4], tasks[t, 5], tasks[t, 6], tasks[t, 7], tasks[t, 8]
            if kind == RSI:
                if clean_close:
                    _rsi_clean(close, n1, out[r1])
                else:
                    _rsi(close, n1, out[r1])
            elif kind == ATR:
                if clean_bars:
                    _atr_clean(high, low, close, n1, out[r1])
                else:
                    _atr(high, low, close, n1, out[r1])
            elif kind == EMA:
                if clean_close:
                    _ewm_clean(close, 2.0 / (n1 + 1.0), n1, out[r1])
                else:
                    _ewm(close, 2.0 / (n1 + 1.0), n1, out[r1])
            elif kind == ROLLING:
                _moments(close, n1, out, r1, r2, -1, -1, 0)
            elif clean_close:
                _macd_clean(close, n1, n2, n3, out[r1], out[r2], out[r3], out[r4], out[r5])
            else:
                _macd(close, n1, n2, n3, out[r1], out[r2], out[r3], out[r4], out[r5])


@dataclass(frozen=True)
class CoreWindows:
    """What one pass computes: RSI and ATR windows, EMA spans, rolling mean/std windows, and MACDs
    as (fast span, slow span, signal span): line (EMA fast - EMA slow) / close, signal, histogram."""

    rsi: tuple[int, ...] = ()
    atr: tuple[int, ...] = ()
    ema: tuple[int, ...] = ()
    rolling: tuple[int, ...] = ()
    macd: tuple[tuple[int, int, int], ...] = ()

    def spans(self) -> tuple[int, ...]:
        """EMA spans, with each MACD's fast and slow span."""
        return tuple(sorted({*self.ema, *(s for m in self.macd for s in m[:2])}))

    def names(self, p: str) -> list[str]:
        """Output columns, in the order `core_indicators` returns them."""
        return (
            [f"{p}rsi_{n}" for n in self.rsi]
            + [f"{p}atr_{n}" for n in self.atr]
            + [f"{p}ema_{n}" for n in self.spans()]
            + [f"{p}{stat}_{n}" for n in self.rolling for stat in ("mean", "std")]
            + [f"{p}macd{part}_{f}_{s}_{g}" for f, s, g in self.macd for part in ("_signal", "", "_hist")]
        )


def _tasks(w: CoreWindows) -> np.ndarray:
    """One row per independent computation, writing the rows of `w.names`, and the core it runs on
    (see `_run`)."""
    row = {name: i for i, name in enumerate(w.names(""))}
    macd_spans = [s for m in w.macd for s in m[:2]]
    if len(set(macd_spans)) != len(macd_spans):
        raise ValueError(f"MACDs {w.macd}: each needs its own fast and slow spans (they write those averages)")
    tasks = [
        (
            MACD,
            f,
            s,
            g,
            row[f"ema_{f}"],
            row[f"ema_{s}"],
            row[f"macd_signal_{f}_{s}_{g}"],
            row[f"macd_{f}_{s}_{g}"],
            row[f"macd_hist_{f}_{s}_{g}"],
        )
        for f, s, g in w.macd
    ]
    tasks += [(ROLLING, n, 0, 0, row[f"mean_{n}"], row[f"std_{n}"], 0, 0, 0) for n in w.rolling]
    tasks += [(RSI, n, 0, 0, row[f"rsi_{n}"], 0, 0, 0, 0) for n in w.rsi]
    tasks += [(ATR, n, 0, 0, row[f"atr_{n}"], 0, 0, 0, 0) for n in w.atr]
    tasks += [(EMA, n, 0, 0, row[f"ema_{n}"], 0, 0, 0, 0) for n in w.ema if n not in macd_spans]
    return place(tasks, [COST[t[0]] for t in tasks])


def core_indicators(high: np.ndarray, low: np.ndarray, close: np.ndarray, w: CoreWindows) -> np.ndarray:
    """(outputs, rows) float64: `w.names(p)` in order; NaN where polars would give null."""
    as_float = [np.ascontiguousarray(a, dtype=np.float64) for a in (high, low, close)]
    # numpy allocates the output (it asks the kernel for huge pages on large arrays: a third of
    # the time numba's own allocation spends on page faults).
    out = np.empty((len(w.names("")), close.size))
    with POOL:
        _run(*as_float, _tasks(w), out)
    return out


def with_core(frame: pl.DataFrame, p: str, w: CoreWindows, prefix: str) -> pl.DataFrame:
    """`frame` with the core indicators of its `<p>high`, `<p>low`, `<p>close` columns, named
    `<prefix><indicator>_<window>` (see CoreWindows.names); NaN where polars would give null."""
    if frame.is_empty():
        return frame.with_columns(pl.lit(None, pl.Float64).alias(n) for n in w.names(prefix))

    def values(column: str) -> np.ndarray:
        series = frame[f"{p}{column}"].cast(pl.Float64)
        # Without nulls numpy reads polars' buffer as it is; with them they become NaN (a copy).
        return (series.fill_null(np.nan) if series.null_count() else series).to_numpy()

    h, l, c = values("high"), values("low"), values("close")
    values = core_indicators(h, l, c, w)
    # NaN stays NaN: features built on these columns are NaN there, and `finish` nulls them.
    return frame.with_columns(pl.Series(name, row) for name, row in zip(w.names(prefix), values, strict=True))
