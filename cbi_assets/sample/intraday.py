"""MES 1-minute bars that add up exactly to each session's daily bar of the front contract.

A session's path is a Brownian bridge, in volatility time, through the daily open, the high and
low at random minutes, and the close, reflected into [low, high] and kept on the tick grid.
Everything is vectorized across sessions; each session's shocks come from its own generator,
so its bars are the same whichever window contains it.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from cbi_assets.sample.sessions import (
    NS_PER_MINUTE,
    RTH_CLOSE_MINUTE,
    RTH_OPEN_MINUTE,
    SESSION_MINUTES,
    globex_open_ns,
)
from cbi_assets.sample.shocks import session_rng

# Every minute that trades carries at least this many contracts, enough for a tick path that
# visits its open, high, low and close as separate trades.
MIN_MINUTE_VOLUME = 4
# Minutes with no trade are absent, as in a real download; they happen in the dead of the night.
_QUIET_HOURS = (180, 540)  # 20:00 to 02:00 Chicago, in minutes after the 17:00 open
_QUIET_MINUTE_EMPTY = 0.004


def _volume_profile() -> np.ndarray:
    """Relative expected volume of each session minute: thin overnight, U-shaped regular hours."""
    m = np.arange(SESSION_MINUTES, dtype=np.float64)
    profile = np.full(SESSION_MINUTES, 0.07)
    profile += 0.05 * np.exp(-np.square((m - 150) / 40))  # Asia opens
    europe = (m >= 540) & (m < RTH_OPEN_MINUTE)
    profile[europe] = 0.22 + 0.25 * (m[europe] - 540) / (RTH_OPEN_MINUTE - 540)
    profile += 1.6 * np.exp(-np.abs(m - 870) / 4) * (m >= 870)  # 07:30 economic releases
    rth = (m >= RTH_OPEN_MINUTE) & (m < RTH_CLOSE_MINUTE)
    middle = (RTH_OPEN_MINUTE + RTH_CLOSE_MINUTE) / 2
    half = (RTH_CLOSE_MINUTE - RTH_OPEN_MINUTE) / 2
    profile[rth] = (
        0.75
        + 0.55 * np.square((m[rth] - middle) / half)
        + 3.0 * np.exp(-(m[rth] - RTH_OPEN_MINUTE) / 20)
        + 2.2 * np.exp(-(RTH_CLOSE_MINUTE - 1 - m[rth]) / 12)
    )
    after = m >= RTH_CLOSE_MINUTE
    profile[after] = 0.45 * np.exp(-(m[after] - RTH_CLOSE_MINUTE) / 25) + 0.08
    return profile


VOLUME_PROFILE = _volume_profile()
# Price moves scale with activity, less than one for one.
VOLATILITY_PROFILE = np.sqrt(VOLUME_PROFILE)


def pinned_paths(
    lengths: np.ndarray,
    pin_position: np.ndarray,
    pin_value: np.ndarray,
    clock: np.ndarray,
    steps: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
) -> np.ndarray:
    """Integer price paths of many groups at once, each passing exactly through its pins.

    Group g has `lengths[g]` points; `pin_position[g]` holds four positions in ascending order,
    the first 0 and the last `lengths[g] - 1`, with `pin_value[g]` the prices there. Between pins
    the path is a Brownian bridge of `steps` (the increment into each point) in `clock` time
    (cumulative within the group), reflected into [low, high] and rounded to whole ticks.
    """
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    group = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(len(group)) - starts[group]
    walk = np.cumsum(steps)
    walk = walk - walk[starts][group]  # zero at each group's first point

    segment = (position > pin_position[group, 1]).astype(np.int64) + (position > pin_position[group, 2])
    a = pin_position[group, segment]
    b = pin_position[group, segment + 1]
    value_a = pin_value[group, segment]
    value_b = pin_value[group, segment + 1]
    clock_a = clock[starts[group] + a]
    span = clock[starts[group] + b] - clock_a
    fraction = np.divide(clock - clock_a, span, out=np.zeros_like(clock), where=span > 0)
    walk_a = walk[starts[group] + a]
    walk_b = walk[starts[group] + b]
    path = value_a + (value_b - value_a) * fraction + (walk - walk_a) - fraction * (walk_b - walk_a)

    # Fold the path back into the day's (or minute's) range like a mirror: the pins are the extremes.
    lo = low[group].astype(np.float64)
    width = (high - low)[group].astype(np.float64)
    folded = np.mod(path - lo, np.maximum(2 * width, 1e-12))
    folded = np.where(folded > width, 2 * width - folded, folded)
    return np.rint(lo + np.where(width > 0, folded, 0.0)).astype(np.int64)


def _sorted_pins(positions: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(positions, axis=1, kind="stable")
    return np.take_along_axis(positions, order, axis=1), np.take_along_axis(values, order, axis=1)


def _session_draws(days: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Each session's shocks from its own generator, in a fixed layout, stacked by session."""
    n_sessions, n = len(days), SESSION_MINUTES
    normal = np.empty((n_sessions, 4, n))
    uniform = np.empty((n_sessions, 2, n))
    extremes = np.empty((n_sessions, 2))
    for i, day in enumerate(days.tolist()):
        rng = session_rng(seed, "MES.ohlcv-1m", day)
        normal[i] = rng.standard_normal((4, n))
        uniform[i] = rng.random((2, n))
        extremes[i] = rng.random(2)
    path, up, down, volume = normal.transpose(1, 0, 2)
    bounce, empty = uniform.transpose(1, 0, 2)
    return {
        "path": path,
        "up": up,
        "down": down,
        "volume": volume,
        "bounce": bounce,
        "empty": empty,
        "extremes": extremes,
    }


def _extreme_minutes(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minute boundaries of the day's high and low: where the volatility is, often near the open and close."""
    variance = np.square(VOLATILITY_PROFILE[:-1])
    cumulative = np.cumsum(variance) / variance.sum()
    t_high = np.clip(np.searchsorted(cumulative, draws[:, 0]) + 1, 1, SESSION_MINUTES - 1)
    t_low = np.clip(np.searchsorted(cumulative, draws[:, 1]) + 1, 1, SESSION_MINUTES - 1)
    t_low = np.where(t_low == t_high, np.where(t_high > 1, t_high - 1, t_high + 1), t_low)
    return t_high, t_low


def _minute_volumes(
    volume: np.ndarray, boundary: np.ndarray, minute_sd: np.ndarray, empty: np.ndarray, shock: np.ndarray
) -> np.ndarray:
    """Split each day's volume over its minutes by the intraday profile and the size of each move."""
    move = np.abs(np.diff(boundary, axis=1)) / np.maximum(minute_sd, 0.25)
    weight = VOLUME_PROFILE[None, :] * np.exp(0.25 * shock) * (0.7 + 0.3 * np.minimum(move, 4.0))
    weight = np.where(empty, 0.0, weight)
    weight /= weight.sum(axis=1, keepdims=True)
    spare = volume - MIN_MINUTE_VOLUME * (~empty).sum(axis=1)
    out = np.where(empty, 0, np.floor(spare[:, None] * weight).astype(np.int64) + MIN_MINUTE_VOLUME)
    # What rounding left over goes to each day's busiest minute.
    out[np.arange(len(volume)), np.argmax(weight, axis=1)] += volume - out.sum(axis=1)
    return out


def minute_bars(daily: pl.DataFrame, seed: int) -> pl.DataFrame:
    """1-minute bars of each session in `daily` (one row a session: the front contract's bar).

    `daily` has date, instrument_id, open, high, low, close (integer ticks) and volume. The bars
    come back in integer ticks with ts_event (UTC ns of the bar's open) and the trade date.
    """
    days = daily["date"].to_numpy().astype("datetime64[D]")
    n_sessions, n = len(days), SESSION_MINUTES
    o, h, l, c = (daily[col].to_numpy().astype(np.int64) for col in ("open", "high", "low", "close"))
    volume = daily["volume"].to_numpy().astype(np.int64)
    if (volume < MIN_MINUTE_VOLUME * n).any():
        raise ValueError("a session's daily volume is too small to spread over its minutes")
    draws = _session_draws(days, seed)
    t_high, t_low = _extreme_minutes(draws["extremes"])

    # Minute volatility in ticks: a Brownian day spans about 1.8 of its standard deviations.
    profile = VOLATILITY_PROFILE[None, :] / np.sqrt(np.square(VOLATILITY_PROFILE).sum())
    minute_sd = (h - l)[:, None] / 1.8 * profile
    start = np.zeros((n_sessions, 1))
    clock = np.concatenate([start, np.cumsum(np.square(minute_sd), axis=1)], axis=1)
    steps = np.concatenate([start, minute_sd * draws["path"]], axis=1)
    positions, values = _sorted_pins(
        np.stack([np.zeros(n_sessions, np.int64), t_high, t_low, np.full(n_sessions, n)], axis=1),
        np.stack([o, h, l, c], axis=1),
    )
    boundary = pinned_paths(np.full(n_sessions, n + 1), positions, values, clock.ravel(), steps.ravel(), l, h).reshape(
        n_sessions, n + 1
    )

    bar_close = boundary[:, 1:]
    # A minute opens at the last price or a tick away from it, never outside the day's range.
    bounce = (draws["bounce"] > 0.88).astype(np.int64) - (draws["bounce"] < 0.12)
    bar_open = np.concatenate([o[:, None], bar_close[:, :-1] + bounce[:, 1:]], axis=1)
    bar_open = np.clip(bar_open, l[:, None], h[:, None])
    wick_up = np.floor(0.6 * np.abs(draws["up"]) * minute_sd).astype(np.int64)
    wick_down = np.floor(0.6 * np.abs(draws["down"]) * minute_sd).astype(np.int64)
    bar_high = np.minimum(np.maximum(bar_open, bar_close) + wick_up, h[:, None])
    bar_low = np.maximum(np.minimum(bar_open, bar_close) - wick_down, l[:, None])

    # Empty minutes in the dead of night, never the ones that carry the day's high or low.
    minute = np.arange(n)[None, :]
    quiet = (minute >= _QUIET_HOURS[0]) & (minute < _QUIET_HOURS[1])
    keeps_extreme = (minute == t_high[:, None] - 1) | (minute == t_low[:, None] - 1)
    empty = quiet & (draws["empty"] < _QUIET_MINUTE_EMPTY) & ~keeps_extreme
    bar_volume = _minute_volumes(volume, boundary, minute_sd, empty, draws["volume"])

    opens_ns = globex_open_ns(days)[:, None] + np.arange(n, dtype=np.int64)[None, :] * NS_PER_MINUTE
    keep = ~empty.ravel()
    return pl.DataFrame(
        {
            "trade_date": np.repeat(days, n)[keep],
            "ts_event": opens_ns.ravel()[keep],
            "instrument_id": np.repeat(daily["instrument_id"].to_numpy(), n)[keep],
            "open": bar_open.ravel()[keep],
            "high": bar_high.ravel()[keep],
            "low": bar_low.ravel()[keep],
            "close": bar_close.ravel()[keep],
            "volume": bar_volume.ravel()[keep],
        }
    )
