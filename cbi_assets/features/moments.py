"""Rolling moments of a table's derived series (returns, ranges, volume) in one compiled pass.

The technical families' rolling statistics beyond the core averages (the deviation, skewness and
kurtosis of returns, their lag-1 autocorrelation, mean ranges and path lengths, the slope of log
price, volume's mean and deviation, the highest and lowest prices) are, as polars expressions, a
separate pass each, most of them several. Here each (series, window) is one loop of running power
sums, or of running extremes, and the loops run side by side on the cores in one compiled call.

Definitions are polars' (tests compare them): `mean`; `std` with ddof=1; `skew` and `kurt` the
population (biased) skewness and excess kurtosis; `max` and `min`; `cov` with ddof=1 and `corr`
of a pair of series. A statistic is missing (NaN) while its window holds a missing (NaN or
infinite) value, or, for `skew`, `kurt` and `corr`, where a series is flat over the window (as
polars' 0/0). The sums are taken about a recent value of the series and re-taken over the window
every few windows, so rounding neither cancels at high levels nor accumulates over millions of rows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numba
import numpy as np
import polars as pl

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")

# Windows between re-takings of a rolling sum: each costs a window's worth of additions.
RECENTRE = 4

POWERS = ("mean", "std", "skew", "kurt")
EXTREMES = ("max", "min")
SINGLE = (*POWERS, *EXTREMES)
PAIRED = ("cov", "corr")


@numba.njit(inline="always", error_model="numpy")
def _add(s1, s2, s3, s4, v, sign, higher):
    """The running sums of powers with v added (sign 1) or removed (sign -1); the 3rd and 4th only
    when the shape is wanted."""
    v2 = v * v
    if higher:
        return s1 + sign * v, s2 + sign * v2, s3 + sign * v2 * v, s4 + sign * v2 * v2
    return s1 + sign * v, s2 + sign * v2, s3, s4


@_jit
def _moments(x, n, out, r_mean, r_std, r_skew, r_kurt, ddof=1):
    """Rolling mean, std (ddof 1, or 0 for the core indicators' Bollinger bands), skewness and
    excess kurtosis of x over n rows into the rows of `out` named by r_* (negative: not
    wanted; the shape needs the std's row, where the variance is kept until the end).

    The loop leaves the population variance and the 3rd and 4th central moments; square roots and
    ratios follow in element-wise passes, which the compiler vectorises (a square root in the loop
    would cost more than the sums).
    """
    higher, keep_mean, keep_var = r_skew >= 0, r_mean >= 0, r_std >= 0
    # A row not wanted is not written: another stands in for it.
    mean, var = out[r_mean if keep_mean else r_std], out[r_std if keep_var else r_mean]
    m3, m4 = (out[r_skew], out[r_kurt]) if higher else (mean, mean)
    s1 = s2 = s3 = s4 = shift = 0.0
    missing, same, recentre = 0, 0, 0
    inv_n = 1.0 / n
    for i in range(x.size):
        recentre -= 1
        if recentre <= 0 and np.isfinite(x[i]):
            recentre = RECENTRE * n
            shift = x[i]
            s1 = s2 = s3 = s4 = 0.0
            missing = 0
            for j in range(max(i - n + 1, 0), i):
                if np.isfinite(x[j]):
                    s1, s2, s3, s4 = _add(s1, s2, s3, s4, x[j] - shift, 1.0, higher)
                else:
                    missing += 1
        elif i >= n:
            if np.isfinite(x[i - n]):
                s1, s2, s3, s4 = _add(s1, s2, s3, s4, x[i - n] - shift, -1.0, higher)
            else:
                missing -= 1
        if np.isfinite(x[i]):
            s1, s2, s3, s4 = _add(s1, s2, s3, s4, x[i] - shift, 1.0, higher)
            same = same + 1 if i > 0 and x[i] == x[i - 1] else 1
        else:
            missing += 1
            same = 0
        if i < n - 1 or missing > 0:
            centre, v = np.nan, np.nan
        elif same >= n:  # a flat window: exactly no deviation, and no shape
            centre, v = x[i], 0.0
        else:
            m = s1 * inv_n
            e2 = s2 * inv_n
            centre, v = m + shift, max(e2 - m * m, 0.0)
            if higher:
                e3, e4 = s3 * inv_n, s4 * inv_n
                m3[i] = e3 - 3 * m * e2 + 2 * m * m * m
                m4[i] = e4 - 4 * m * e3 + 6 * m * m * e2 - 3 * m * m * m * m
        if keep_mean:
            mean[i] = centre
        if keep_var:
            var[i] = v
    if higher:
        for i in range(x.size):
            c2 = var[i]
            defined = c2 > 0  # False for NaN too
            m3[i] = m3[i] / (c2 * np.sqrt(c2)) if defined else np.nan
            m4[i] = m4[i] / (c2 * c2) - 3.0 if defined else np.nan
    unbiased = n / (n - ddof)
    for i in range(x.size if keep_var else 0):
        var[i] = np.sqrt(var[i] * unbiased)


@_jit
def _comoments(x, y, n, out, r_cov, r_corr):
    """Rolling covariance (ddof 1) and correlation of x and y over n rows (as `_moments`: the loop
    leaves the population covariance and the product of variances, element-wise passes the rest)."""
    cov, corr = out[r_cov], out[r_corr]
    sx, sy, sxx, syy, sxy, dx, dy = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    missing, same_x, same_y, recentre = 0, 0, 0, 0
    inv_n = 1.0 / n
    for i in range(x.size):
        recentre -= 1
        if recentre <= 0 and np.isfinite(x[i]) and np.isfinite(y[i]):
            recentre = RECENTRE * n
            dx, dy = x[i], y[i]
            sx, sy, sxx, syy, sxy, missing = 0.0, 0.0, 0.0, 0.0, 0.0, 0
            for j in range(max(i - n + 1, 0), i):
                a, b = x[j] - dx, y[j] - dy
                if np.isfinite(a) and np.isfinite(b):
                    sx, sy, sxx, syy, sxy = sx + a, sy + b, sxx + a * a, syy + b * b, sxy + a * b
                else:
                    missing += 1
        elif i >= n:
            a, b = x[i - n] - dx, y[i - n] - dy
            if np.isfinite(a) and np.isfinite(b):
                sx, sy, sxx, syy, sxy = sx - a, sy - b, sxx - a * a, syy - b * b, sxy - a * b
            else:
                missing -= 1
        a, b = x[i] - dx, y[i] - dy
        if np.isfinite(a) and np.isfinite(b):
            sx, sy, sxx, syy, sxy = sx + a, sy + b, sxx + a * a, syy + b * b, sxy + a * b
            same_x = same_x + 1 if i > 0 and x[i] == x[i - 1] else 1
            same_y = same_y + 1 if i > 0 and y[i] == y[i - 1] else 1
        else:
            missing += 1
            same_x = same_y = 0
        if i < n - 1 or missing > 0:
            cov[i] = corr[i] = np.nan
        elif same_x >= n or same_y >= n:  # a flat series: no covariance, no correlation
            cov[i], corr[i] = 0.0, 0.0
        else:
            mx, my = sx * inv_n, sy * inv_n
            cov[i] = sxy * inv_n - mx * my
            corr[i] = (sxx * inv_n - mx * mx) * (syy * inv_n - my * my)
    unbiased = n / (n - 1.0)
    for i in range(x.size):
        c, v = cov[i], corr[i]
        corr[i] = c / np.sqrt(v) if v > 0 else np.nan
        cov[i] = c * unbiased


@_jit
def _extremes(x, n, out, r_max, r_min):
    """Rolling max and min of x over n rows into rows r_max and r_min of `out`.

    Van Herk / Gil-Werman: in blocks of n rows, the extreme of a window is that of the suffix of
    the block it starts in and the prefix of the block it ends in. Each block takes one pass
    forward (its prefixes, joined to the previous block's suffixes) and one back (its suffixes),
    whatever the window (2.2 ns a row). Its scratch is one block, so it stays in cache.
    """
    hi, lo = out[r_max], out[r_min]
    suffix_hi, suffix_lo = np.empty(n), np.empty(n)  # of the previous block, by offset in it
    missing = -n  # the last row with a missing value
    for start in range(0, x.size, n):
        end = min(start + n, x.size)
        a, b = -np.inf, np.inf
        for i in range(start, end):
            # A NaN compares false: it leaves the extremes alone, and its windows are missing.
            v = x[i]
            a = v if v > a else a
            b = v if v < b else b
            if not np.isfinite(v):
                missing = i
            offset = i - start + 1  # the window starts at this offset of the previous block
            if i < n - 1 or i - missing < n:
                hi[i] = lo[i] = np.nan
            elif offset == n:  # the window is this block
                hi[i], lo[i] = a, b
            else:
                h, l = suffix_hi[offset], suffix_lo[offset]
                hi[i] = h if h > a else a
                lo[i] = l if l < b else b
        a, b = -np.inf, np.inf
        for i in range(end - 1, start - 1, -1):
            v = x[i]
            a = v if v > a else a
            b = v if v < b else b
            suffix_hi[i - start], suffix_lo[i - start] = a, b


def place(tasks: list[tuple], costs: list[float]) -> np.ndarray:
    """The tasks of a compiled pass as int64 rows, each with the core it runs on appended: longest
    first onto the least loaded core."""
    load = [0.0] * numba.get_num_threads()
    placed = []
    for i in sorted(range(len(tasks)), key=lambda i: -costs[i]):
        core = load.index(min(load))
        load[core] += costs[i]
        placed.append((*tasks[i], core))
    width = len(tasks[0]) + 1 if tasks else 1
    return np.array(placed, dtype=np.int64).reshape(-1, width)


# The compiled passes (this one and the core indicators') run on numba's own thread pool, which
# must not be entered by two Python threads at once.
POOL = threading.Lock()

MOMENTS, COMOMENTS, EXTREMA = 0, 1, 2
COST = {MOMENTS: 1.5, COMOMENTS: 2.0, EXTREMA: 0.8}


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _run(inputs, tasks, out):
    """Each task (kind, n, x, y, row1..row4, core) on its core; the tasks are independent."""
    cores = tasks[:, 8].max() + 1 if tasks.shape[0] else 0
    for core in numba.prange(cores):
        for t in range(tasks.shape[0]):
            if tasks[t, 8] != core:
                continue
            kind, n, x, y = tasks[t, 0], tasks[t, 1], tasks[t, 2], tasks[t, 3]
            if kind == MOMENTS:
                _moments(inputs[x], n, out, tasks[t, 4], tasks[t, 5], tasks[t, 6], tasks[t, 7])
            elif kind == EXTREMA:
                _extremes(inputs[x], n, out, tasks[t, 4], tasks[t, 5])
            else:
                _comoments(inputs[x], inputs[y], n, out, tasks[t, 4], tasks[t, 5])


@dataclass(frozen=True)
class Rolling:
    """Statistics of `series` (or, with `other`, of the pair) over `window` rows."""

    series: str
    window: int
    stats: tuple[str, ...]
    other: str | None = None

    def column(self, prefix: str, stat: str) -> str:
        pair = f"_{self.other}" if self.other else ""
        return f"{prefix}{stat}_{self.series}{pair}_{self.window}"


def merged(requests: list[Rolling]) -> list[Rolling]:
    """One request per (series, other, window) with the union of their statistics."""
    stats: dict[tuple, set[str]] = {}
    for r in requests:
        allowed = PAIRED if r.other else SINGLE
        if r.window < 2 or not set(r.stats) <= set(allowed):
            raise ValueError(f"{r}: windows of at least 2 rows, statistics among {allowed}")
        stats.setdefault((r.series, r.other, r.window), set()).update(r.stats)
    return [Rolling(s, w, tuple(x for x in (PAIRED if o else SINGLE) if x in st), o) for (s, o, w), st in stats.items()]


def with_moments(frame: pl.DataFrame, inputs: dict[str, pl.Expr], requests: list[Rolling], prefix: str) -> pl.DataFrame:
    """`frame` with each request's statistics of the series `inputs` defines on it, named
    `<prefix><stat>_<series>[_<other>]_<window>` (Rolling.column); NaN where polars gives null or NaN."""
    requests = merged(requests)
    names = [r.column(prefix, s) for r in requests for s in r.stats]
    if frame.is_empty():
        return frame.with_columns(pl.lit(None, pl.Float64).alias(n) for n in names)
    series = [s for s in inputs if any(s in (r.series, r.other) for r in requests)]
    values = frame.select(**{s: inputs[s].cast(pl.Float64) for s in series}).fill_null(np.nan)
    matrix = np.ascontiguousarray(values.to_numpy().T)
    row = {n: i for i, n in enumerate(names)}
    tasks, scratch = [], len(names)
    for r in requests:
        for kind, stats in ((COMOMENTS, PAIRED),) if r.other else ((MOMENTS, POWERS), (EXTREMA, EXTREMES)):
            if not set(stats) & set(r.stats):
                continue
            # Rows a loop needs beyond those asked for (the variance under the shape, a pair's
            # covariance under its correlation) lie past the outputs, allocated with them: a
            # fresh array per loop would cost its page faults again.
            needed = set(r.stats) & set(stats)
            if kind != MOMENTS:  # a pair's loop and the extremes' write both their rows
                needed = set(stats)
            elif needed & {"skew", "kurt"}:
                needed |= {"std", "skew", "kurt"}
            rows = []
            for s in stats:
                if r.column(prefix, s) in row:
                    rows.append(row[r.column(prefix, s)])
                elif s in needed:
                    rows.append(scratch)
                    scratch += 1
                else:
                    rows.append(-1)
            rows += [-1] * (4 - len(rows))
            tasks.append((kind, r.window, series.index(r.series), series.index(r.other) if r.other else 0, *rows))
    out = np.empty((scratch, frame.height))
    with POOL:
        _run(matrix, place(tasks, [COST[t[0]] for t in tasks]), out)
    return frame.with_columns(pl.Series(name, values) for name, values in zip(names, out[: len(names)], strict=True))
