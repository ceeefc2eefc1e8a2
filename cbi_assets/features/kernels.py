"""The core indicators (exponential and Wilder averages, RSI, ATR, rolling mean and population
standard deviation, the MACD signal) of one instrument's bars, in a single compiled pass.

As polars expressions each indicator is a chain of passes (a difference, a clip, an average, a
division), each materializing a column. Here each indicator is one tight loop with its running
state in registers, all in one compiled call. The results equal polars' `ewm_mean(adjust=False,
min_samples=n)`, `rolling_mean(n)` and `rolling_std(n, ddof=0)` (tests compare them), including
where inputs are null (NaN here): an average starts at the first value, skips a missing one with
its weight decayed, and a rolling value is missing while its window holds a missing input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import polars as pl

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@_jit
def _ewm(x, alpha, min_count, out):
    """Adjust=False exponential average of x into out, null (NaN) until `min_count` values are seen.

    A missing value lets the state decay a step, so the next value weighs alpha against
    (1 - alpha)^2 (polars' ignore_nulls=False); at a missing value the output is missing.
    """
    state, weight, count = 0.0, 1.0 - alpha, 0
    for i in range(x.size):
        v = x[i]
        if np.isnan(v):
            weight *= 1.0 - alpha
            out[i] = np.nan
            continue
        if count == 0:
            state = v
        elif weight == 1.0 - alpha:  # nothing missing since the last value: no division
            state += alpha * (v - state)
        else:
            state = (weight * state + alpha * v) / (weight + alpha)
        weight = 1.0 - alpha
        count += 1
        out[i] = state if count >= min_count else np.nan


@_jit
def _rsi(close, n, out):
    """Wilder RSI: adjust=False averages (alpha 1/n) of the close's rises and falls, in one loop."""
    alpha = 1.0 / n
    decay = 1.0 - alpha
    gain = loss = 0.0
    weight, count = decay, 0
    out[0] = np.nan
    for i in range(1, close.size):
        change = close[i] - close[i - 1]
        if np.isnan(change):
            weight *= decay
            out[i] = np.nan
            continue
        up, down = max(change, 0.0), max(-change, 0.0)
        if count == 0:
            gain, loss = up, down
        elif weight == decay:
            gain += alpha * (up - gain)
            loss += alpha * (down - loss)
        else:
            gain = (weight * gain + alpha * up) / (weight + alpha)
            loss = (weight * loss + alpha * down) / (weight + alpha)
        weight = decay
        count += 1
        out[i] = 100.0 - 100.0 / (1.0 + gain / loss) if count >= n else np.nan


@_jit
def _true_range(high, low, close, out):
    """The largest of the defined ranges: high - low, and each against the previous close (the
    first bar has none; polars' max_horizontal skips nulls)."""
    for i in range(close.size):
        previous = close[i - 1] if i > 0 else np.nan
        best = high[i] - low[i]
        for candidate in (abs(high[i] - previous), abs(low[i] - previous)):
            if not np.isnan(candidate) and (np.isnan(best) or candidate > best):
                best = candidate
        out[i] = best


@_jit
def _rolling(x, n, mean, std):
    """Mean and population std over the last n values; missing while the window holds a missing one.

    Running sums of (x - shift) and its square, re-centred on the window every n rows: the shift
    keeps the variance from cancelling at high price levels, and the re-centring keeps rounding
    from accumulating over millions of rows, so a table built in parts equals one built whole to
    rounding. A window of n equal values has std exactly 0 (a flat minute market is common).
    """
    shift = 0.0
    total, squares, missing, same, recentre = 0.0, 0.0, 0, 0, 0
    for i in range(x.size):
        recentre -= 1
        if recentre <= 0 and not np.isnan(x[i]):
            recentre = n
            shift = x[i]
            total, squares, missing = 0.0, 0.0, 0
            for j in range(max(i - n + 1, 0), i):
                v = x[j] - shift
                if np.isnan(v):
                    missing += 1
                else:
                    total += v
                    squares += v * v
        elif i >= n:
            gone = x[i - n] - shift
            if np.isnan(gone):
                missing -= 1
            else:
                total -= gone
                squares -= gone * gone
        v = x[i] - shift
        if np.isnan(v):
            missing += 1
            same = 0
        else:
            total += v
            squares += v * v
            same = same + 1 if i > 0 and x[i] == x[i - 1] else 1
        if i < n - 1 or missing > 0:
            mean[i] = std[i] = np.nan
        elif same >= n:
            mean[i], std[i] = x[i], 0.0
        else:
            m = total / n
            mean[i] = m + shift
            std[i] = np.sqrt(max(squares / n - m * m, 0.0))


@_jit
def _core(high, low, close, rsi_n, atr_n, ema_n, window_n, signal):
    rows = close.size
    out = np.empty((rsi_n.size + atr_n.size + ema_n.size + 2 * window_n.size + signal.shape[0], rows))
    scratch, other = np.empty(rows), np.empty(rows)
    row = 0
    for n in rsi_n:
        _rsi(close, n, out[row])
        row += 1
    if atr_n.size:
        _true_range(high, low, close, other)
    for n in atr_n:
        _ewm(other, 1.0 / n, n, out[row])
        row += 1
    first_ema = row
    for n in ema_n:
        _ewm(close, 2.0 / (n + 1.0), n, out[row])
        row += 1
    for n in window_n:
        _rolling(close, n, out[row], out[row + 1])
        row += 2
    # MACD signal: the exponential average of (EMA fast - EMA slow) / close, once both exist.
    for j in range(signal.shape[0]):
        fast, slow, span = out[first_ema + signal[j, 0]], out[first_ema + signal[j, 1]], signal[j, 2]
        for i in range(rows):
            scratch[i] = (fast[i] - slow[i]) / close[i]
        _ewm(scratch, 2.0 / (span + 1.0), span, out[row])
        row += 1
    return out


@dataclass(frozen=True)
class CoreWindows:
    """What one pass computes: RSI and ATR windows, EMA spans, rolling mean/std windows, and MACD
    signals as (fast span, slow span, signal span)."""

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
        return ([f"{p}rsi_{n}" for n in self.rsi] + [f"{p}atr_{n}" for n in self.atr]
                + [f"{p}ema_{n}" for n in self.spans()]
                + [f"{p}{stat}_{n}" for n in self.rolling for stat in ("mean", "std")]
                + [f"{p}macd_signal_{f}_{s}_{g}" for f, s, g in self.macd])


def core_indicators(high: np.ndarray, low: np.ndarray, close: np.ndarray, w: CoreWindows) -> np.ndarray:
    """(outputs, rows) float64: `w.names(p)` in order; NaN where polars would give null."""
    spans = w.spans()
    signal = np.array([(spans.index(f), spans.index(s), g) for f, s, g in w.macd], dtype=np.int64).reshape(-1, 3)
    as_float = [np.ascontiguousarray(a, dtype=np.float64) for a in (high, low, close)]
    ints = [np.array(v, dtype=np.int64) for v in (w.rsi, w.atr, spans, w.rolling)]
    return _core(*as_float, *ints, signal)


def with_core(frame: pl.DataFrame, p: str, w: CoreWindows, prefix: str) -> pl.DataFrame:
    """`frame` with the core indicators of its `<p>high`, `<p>low`, `<p>close` columns, named
    `<prefix><indicator>_<window>` (see CoreWindows.names); NaN where polars would give null."""
    if frame.is_empty():
        return frame.with_columns(pl.lit(None, pl.Float64).alias(n) for n in w.names(prefix))
    h, l, c = (frame[f"{p}{x}"].cast(pl.Float64).fill_null(np.nan).to_numpy() for x in ("high", "low", "close"))
    values = core_indicators(h, l, c, w)
    # NaN stays NaN: features built on these columns are NaN there, and `finish` nulls them.
    return frame.with_columns(pl.Series(name, row) for name, row in zip(w.names(prefix), values, strict=True))
