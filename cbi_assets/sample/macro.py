"""FRED observations and Yahoo daily bars, tied to the simulated markets where the world ties them.

VIX follows the ES volatility the markets simulate, the high-yield spread widens with it, WTI spot
is the nearest CL contract, and ZL=F is the ZL front contract by volume. Everything else follows
its approximate history (`anchors`) with its own mean-reverting noise.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from cbi_assets.catalogue import FRED_SERIES, FUTURES, HISTORY_START
from cbi_assets.sample import anchors
from cbi_assets.sample.markets import TRADING_DAYS, MarketHistory
from cbi_assets.sample.sessions import settlement_sessions, weekdays
from cbi_assets.sample.shocks import correlated, garch_forecast, mean_reverting, normals

# Decimals FRED publishes each series with.
FRED_DECIMALS = {
    "DGS10": 2,
    "DGS2": 2,
    "T10Y2Y": 2,
    "DFF": 2,
    "DTWEXBGS": 4,
    "T10YIE": 2,
    "VIXCLS": 2,
    "DCOILWTICO": 2,
    "BAMLH0A0HYM2": 2,
    "DEXCHUS": 4,
    "DEXUSEU": 4,
    "DEXJPUS": 2,
    "CPIAUCSL": 3,
}
YAHOO_DECIMALS = {"ZL=F": 2, "^VIX": 2, "DX-Y.NYB": 3, "BRL=X": 4, "MYR=X": 4}
# Daily pull of exchange rates back to their path: deviations of a few percent that last months.
_FX_PULL = 0.98


def _soft_floor(x: np.ndarray, floor: float, softness: float) -> np.ndarray:
    """`x` where it is well above `floor`, bending smoothly toward it below: rates stay positive."""
    return floor + softness * np.logaddexp(0.0, (x - floor) / softness)


def vix_close(history: MarketHistory, seed: int) -> np.ndarray:
    """VIX: the ES volatility expected for tomorrow, annualized, plus a variance premium.

    The premium is what options pay over realized volatility; the soft floor near 9 and the soft
    ceiling in the eighties are where the index has lived since 1990.
    """
    n = len(history.sessions)
    regime = anchors.follow(anchors.ES_VOL, history.sessions, log=False)
    expected = 100.0 * regime * np.sqrt(garch_forecast(history.shocks["ES"]))
    noise = np.exp(mean_reverting(0.05 * normals(seed, "VIXCLS", n), 0.9))
    raw = (1.05 * expected + 3.5) * noise
    capped = np.where(raw > 50.0, 50.0 + 30.0 * np.tanh((raw - 50.0) / 30.0), raw)
    return np.logaddexp(0.6 * capped, 0.6 * 9.0) / 0.6


def _rates(history: MarketHistory, seed: int) -> dict[str, np.ndarray]:
    days, n = history.sessions, len(history.sessions)
    two = anchors.follow(anchors.DGS2_LEVEL, days, log=False)
    ten = anchors.follow(anchors.DGS10_LEVEL, days, log=False)
    two_shocks = normals(seed, "DGS2", n)
    ten_shocks = correlated(two_shocks, normals(seed, "DGS10", n), 0.75)
    # Near zero the front end barely moves; yields are noisier at higher levels.
    dgs2 = _soft_floor(two + mean_reverting((0.015 + 0.012 * two) * two_shocks, 0.97), 0.1, 0.05)
    dgs10 = _soft_floor(ten + mean_reverting((0.04 + 0.004 * ten) * ten_shocks, 0.97), 0.4, 0.1)
    # FRED's spread is the difference of the published, rounded yields.
    hundredths_2, hundredths_10 = np.rint(dgs2 * 100), np.rint(dgs10 * 100)
    breakeven = anchors.follow(anchors.BREAKEVEN_10Y, days, log=False)
    t10yie = _soft_floor(breakeven + mean_reverting(0.03 * normals(seed, "T10YIE", n), 0.98), 0.05, 0.05)
    # High-yield spreads widen when equity volatility runs above its regime.
    es_regime = anchors.follow(anchors.ES_VOL, days, log=False) / np.sqrt(TRADING_DAYS)
    stress = np.log(history.sigma["ES"] / es_regime)
    spread = anchors.follow(anchors.HIGH_YIELD_SPREAD, days) * np.exp(
        0.3 * stress + mean_reverting(0.015 * normals(seed, "BAMLH0A0HYM2", n), 0.98)
    )
    return {
        "DGS2": hundredths_2 / 100,
        "DGS10": hundredths_10 / 100,
        "T10Y2Y": (hundredths_10 - hundredths_2) / 100,
        "T10YIE": t10yie,
        "BAMLH0A0HYM2": spread,
    }


def _currencies(history: MarketHistory, seed: int) -> dict[str, np.ndarray]:
    """The dollar moves the major crosses together; the renminbi trades in a managed band."""
    days, n = history.sessions, len(history.sessions)
    dollar = normals(seed, "dollar", n)

    def around(table: anchors.Table, sigma: np.ndarray | float, shocks: np.ndarray) -> np.ndarray:
        return anchors.follow(table, days) * np.exp(mean_reverting(sigma * shocks, _FX_PULL))

    cny_sigma = anchors.follow(
        (
            ("2005-07-20", 0.00003),
            ("2005-07-22", 0.0008),
            ("2008-07-15", 0.0008),
            ("2008-07-16", 0.0002),
            ("2010-06-18", 0.0002),
            ("2010-06-21", 0.0010),
        ),
        days,
        log=False,
    )
    return {
        "DX-Y.NYB": around(anchors.DOLLAR_INDEX, 0.0045, dollar),
        "DTWEXBGS": around(anchors.BROAD_DOLLAR, 0.0035, correlated(dollar, normals(seed, "DTWEXBGS", n), 0.85)),
        "DEXUSEU": around(anchors.USD_PER_EUR, 0.006, correlated(-dollar, normals(seed, "DEXUSEU", n), 0.85)),
        "DEXJPUS": around(anchors.JPY_PER_USD, 0.006, correlated(dollar, normals(seed, "DEXJPUS", n), 0.45)),
        "DEXCHUS": around(anchors.CNY_PER_USD, cny_sigma, correlated(dollar, normals(seed, "DEXCHUS", n), 0.3)),
    }


def _on_days(values: np.ndarray, sessions: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Session values laid on `days`, NaN where a day is not a session (a FRED holiday gap)."""
    i = np.clip(np.searchsorted(sessions, days), 0, len(sessions) - 1)
    return np.where(sessions[i] == days, values[i], np.nan)


def _observations(days: np.ndarray, values: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"date": days, "value": values}).with_columns(pl.col("value").fill_nan(None))


def _fed_funds(first: dt.date, end: dt.date, seed: int) -> pl.DataFrame:
    """Every calendar day; a day without a session repeats the last session's rate, as FRED does."""
    days = np.arange(np.datetime64(first), np.datetime64(end) + 1, dtype="datetime64[D]")
    rate = anchors.step(anchors.FED_FUNDS, days) + 0.02 * normals(seed, "DFF", len(days))
    rate = np.maximum(np.round(rate, 2), 0.04)
    sessions = settlement_sessions(first, end)
    published = np.isin(days, sessions)
    last_published = np.maximum.accumulate(np.where(published, np.arange(len(days)), 0))
    return pl.DataFrame({"date": days, "value": rate[last_published]})


def _consumer_prices(first: dt.date, end: dt.date, seed: int) -> pl.DataFrame:
    """Monthly, dated the first of the month it describes, from the first month start on or after `first`."""
    first_month = np.datetime64(first, "M") + (0 if first.day == 1 else 1)
    months = np.arange(first_month, np.datetime64(end, "M") + 1).astype("datetime64[D]")
    innovations = 0.0012 * normals(seed, "CPIAUCSL", len(months))
    innovations[:1] = 0.0  # the first month sits on its anchor
    level = anchors.follow(anchors.CPI_LEVEL, months) * np.exp(mean_reverting(innovations, 0.85))
    return pl.DataFrame({"date": months, "value": level})


def _first_observation(series_start: dt.date, sample_start: dt.date) -> dt.date:
    """A sample that starts with the series' first session holds its whole history (DFF from
    1 January 2000, a Saturday); a later sample starts where it starts."""
    first_session = settlement_sessions(series_start, series_start + dt.timedelta(days=14))[0]
    return series_start if sample_start <= first_session.astype(dt.date) else sample_start


def fred_observations(
    history: MarketHistory, wti_nearest: np.ndarray, seed: int, start: dt.date, end: dt.date
) -> dict[str, pl.DataFrame]:
    """`date, value` frames for every FRED series, from each series' start to `end`.

    Daily series have a row on every weekday, empty on exchange holidays; DFF has every calendar
    day and CPIAUCSL the first of every month. `wti_nearest` is the nearest CL contract's close.
    """
    sessions, n = history.sessions, len(history.sessions)
    on_sessions = {
        **_rates(history, seed),
        **{k: v for k, v in _currencies(history, seed).items() if k != "DX-Y.NYB"},
        "VIXCLS": vix_close(history, seed),
        "DCOILWTICO": wti_nearest * np.exp(0.004 * normals(seed, "DCOILWTICO", n)),
    }
    out: dict[str, pl.DataFrame] = {}
    for series_id, series in FRED_SERIES.items():
        first = _first_observation(series.start, start)
        if series_id == "DFF":
            out[series_id] = _fed_funds(first, end, seed)
        elif series_id == "CPIAUCSL":
            out[series_id] = _consumer_prices(first, end, seed)
        else:
            days = weekdays(first, end)
            out[series_id] = _observations(days, _on_days(on_sessions[series_id], sessions, days))
    return out


def _daily_bar(close: np.ndarray, sigma: float | np.ndarray, shocks: np.ndarray) -> dict[str, np.ndarray]:
    """Open, high and low around a close series, with a small overnight gap."""
    gap, up, down = shocks.T
    previous = np.concatenate([close[:1], close[:-1]])
    open_ = previous * np.exp(0.3 * sigma * gap)
    return {
        "open": open_,
        "high": np.maximum(open_, close) * np.exp(0.6 * sigma * np.abs(up)),
        "low": np.minimum(open_, close) * np.exp(-0.6 * sigma * np.abs(down)),
        "close": close,
    }


def _yahoo_frame(
    days: np.ndarray, bar: dict[str, np.ndarray], decimals: int, volume: np.ndarray | None = None
) -> pl.DataFrame:
    rounded = {k: np.round(v, decimals) for k, v in bar.items()}
    # Rounding must not push the open or close outside the day's range.
    rounded["high"] = np.maximum.reduce([rounded["high"], rounded["open"], rounded["close"]])
    rounded["low"] = np.minimum.reduce([rounded["low"], rounded["open"], rounded["close"]])
    return pl.DataFrame(
        {
            "date": days,
            **rounded,
            "adj_close": rounded["close"],
            "volume": np.zeros(len(days), np.int64) if volume is None else volume.astype(np.int64),
        }
    )


def yahoo_bars(
    history: MarketHistory, zl_front: pl.DataFrame, seed: int, start: dt.date, end: dt.date
) -> dict[str, pl.DataFrame]:
    """`date, open, high, low, close, adj_close, volume` frames for every Yahoo ticker.

    Exchange tickers trade on NYSE sessions; currencies (`=X`) quote on every weekday.
    `zl_front` is the ZL front contract by volume (integer ticks).
    """
    sessions, n = history.sessions, len(history.sessions)
    tick = FUTURES["ZL"].tick_size
    zl = {col: zl_front[col].to_numpy() * tick for col in ("open", "high", "low", "close")}
    vix = vix_close(history, seed)
    dxy = _currencies(history, seed)["DX-Y.NYB"]

    fx_days = weekdays(max(start, HISTORY_START), end)
    m = len(fx_days)

    def quoted(name: str, table: anchors.Table, sigma: np.ndarray) -> np.ndarray:
        level = anchors.follow(table, fx_days)
        return level * np.exp(mean_reverting(sigma * normals(seed, name, m), _FX_PULL))

    myr_sigma = anchors.follow((("2005-07-20", 0.00001), ("2005-07-22", 0.003)), fx_days, log=False)
    brl = quoted("BRL=X", anchors.BRL_PER_USD, np.full(m, 0.007))
    myr = quoted("MYR=X", anchors.MYR_PER_USD, myr_sigma)
    myr_range = np.maximum(myr_sigma, 0.0002)  # even a pegged rate prints a small daily range
    return {
        "ZL=F": _yahoo_frame(zl_front["date"].to_numpy(), zl, 2, zl_front["volume"].to_numpy()),
        "^VIX": _yahoo_frame(sessions, _daily_bar(vix, 0.05, normals(seed, "^VIX.bar", n, 3)), 2),
        "DX-Y.NYB": _yahoo_frame(sessions, _daily_bar(dxy, 0.004, normals(seed, "DX-Y.NYB.bar", n, 3)), 3),
        "BRL=X": _yahoo_frame(fx_days, _daily_bar(brl, 0.008, normals(seed, "BRL=X.bar", m, 3)), 4),
        "MYR=X": _yahoo_frame(fx_days, _daily_bar(myr, myr_range, normals(seed, "MYR=X.bar", m, 3)), 4),
    }
