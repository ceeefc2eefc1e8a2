"""Technical indicator families on OHLCV bars, as polars expressions.

Every function reads the columns `<p>open`, `<p>high`, `<p>low`, `<p>close`, `<p>volume` of one
instrument (prefix `p`, e.g. "zl_") on one timeframe, and uses only the current and earlier bars,
so a value at a bar's close is known at that close. Scale-free forms (returns, ratios to price)
keep the features comparable across decades of price levels.

The indicator functions below are the definitions, checked by hand in the tests. The feature
families read the averages-based ones (RSI, ATR, EMAs, the MACD, rolling mean and standard
deviation of the close) from one compiled pass over the bars (`kernels.with_core`), and their
rolling moments (of returns, ranges, log price and volume) from another (`moments.with_moments`);
the tests hold both equal to the polars definitions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from cbi_assets.catalogue import TIMEFRAMES
from cbi_assets.features.kernels import CoreWindows, with_core
from cbi_assets.features.moments import Rolling, with_moments
from cbi_assets.features.spec import FeatureSet

TRADING_DAYS = 252
SESSION_MINUTES = 1_380  # a Globex session, 17:00-16:00 Chicago
STOCHASTIC = 14  # bars of the stochastic oscillator's high-low range


def bars_per_year(timeframe: str) -> float:
    minutes = TIMEFRAMES[timeframe]
    return TRADING_DAYS if minutes is None else TRADING_DAYS * SESSION_MINUTES / minutes


# --- Indicators ---------------------------------------------------------------------------------


def log_return(close: pl.Expr, n: int) -> pl.Expr:
    return (close / close.shift(n)).log()


def wilder(x: pl.Expr, n: int) -> pl.Expr:
    """Wilder's smoothing (RSI, ATR): an exponential average with alpha 1/n."""
    return x.ewm_mean(alpha=1 / n, adjust=False, min_samples=n)


def rsi(close: pl.Expr, n: int) -> pl.Expr:
    change = close.diff()
    gain = wilder(change.clip(lower_bound=0), n)
    loss = wilder((-change).clip(lower_bound=0), n)
    return 100 - 100 / (1 + gain / loss)


def ema(x: pl.Expr, span: int) -> pl.Expr:
    return x.ewm_mean(span=span, adjust=False, min_samples=span)


def true_range(high: pl.Expr, low: pl.Expr, close: pl.Expr) -> pl.Expr:
    previous = close.shift(1)
    return pl.max_horizontal(high - low, (high - previous).abs(), (low - previous).abs())


def atr(high: pl.Expr, low: pl.Expr, close: pl.Expr, n: int) -> pl.Expr:
    return wilder(true_range(high, low, close), n)


def bollinger_position(close: pl.Expr, n: int, k: float = 2.0) -> pl.Expr:
    """Where the close sits in the band: 0 at the lower band, 1 at the upper (population std)."""
    mean, sd = close.rolling_mean(n), close.rolling_std(n, ddof=0)
    return (close - (mean - k * sd)) / (2 * k * sd)


def stochastic_k(close: pl.Expr, lowest: pl.Expr, highest: pl.Expr) -> pl.Expr:
    """Stochastic %K: where the close sits between the window's lowest low and highest high."""
    return (close - lowest) / (highest - lowest)


# --- Window presets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    """Look-back windows in bars of the family's timeframe."""

    returns: tuple[int, ...]
    volatility: tuple[int, ...]
    rsi: tuple[int, ...]
    atr: tuple[int, ...]
    bollinger: tuple[int, ...]
    sma: tuple[int, ...]
    ema: tuple[int, ...]
    high: tuple[int, ...]
    momentum: tuple[int, ...]
    shape: tuple[int, ...]  # skew, kurtosis, autocorrelation, efficiency, slope, range-based vol
    volume: tuple[int, ...]
    macd: tuple[tuple[int, int, int], ...] = ((12, 26, 9),)
    full: bool = True  # the whole family, or the core of a related market


DAILY = Windows(
    returns=(1, 5, 21, 63, 126, 252),
    volatility=(5, 21, 63, 126, 252),
    rsi=(7, 14, 21),
    atr=(14, 63),
    bollinger=(20, 50),
    sma=(5, 10, 20, 50, 100, 200),
    ema=(12, 26, 50),
    high=(21, 63, 252),
    momentum=(21, 63, 252),
    shape=(21, 63),
    volume=(5, 21),
)
INTRADAY = Windows(
    returns=(1, 5, 15, 30, 60, 240),
    volatility=(15, 30, 60, 240),
    rsi=(7, 14, 30),
    atr=(14, 60),
    bollinger=(20, 60),
    sma=(5, 15, 30, 60, 240),
    ema=(12, 26, 60),
    high=(30, 60, 240),
    momentum=(30, 60, 240),
    shape=(30, 120),
    volume=(5, 30),
)
# Higher timeframes seen from a lower one, and related markets: the core of the family.
CORE = Windows(
    returns=(1, 5, 21, 63),
    volatility=(21, 63),
    rsi=(14,),
    atr=(),
    bollinger=(20,),
    sma=(50, 200),
    ema=(),
    high=(252,),
    momentum=(63,),
    shape=(),
    volume=(),
    macd=(),
    full=False,
)
CORE_INTRADAY = Windows(
    returns=(1, 4, 12),
    volatility=(12, 48),
    rsi=(14,),
    atr=(14,),
    bollinger=(20,),
    sma=(20,),
    ema=(),
    high=(48,),
    momentum=(),
    shape=(),
    volume=(),
    macd=((12, 26, 9),),
    full=False,
)


def core_windows(w: Windows) -> CoreWindows:
    """The compiled pass's share of a family: its averages of the close and their windows."""
    return CoreWindows(rsi=w.rsi, atr=w.atr, ema=w.ema, rolling=tuple(sorted({*w.bollinger, *w.sma})), macd=w.macd)


def rolling_requests(w: Windows) -> list[Rolling]:
    """The compiled rolling-moments pass's share of a family (see `moment_inputs` for the series)."""
    requests = [Rolling("r1", n, ("std",)) for n in (*w.volatility, *w.momentum)]
    requests += [Rolling("close", n, ("max", "min") if w.full else ("max",)) for n in w.high]
    if not w.full:
        return requests
    requests += [Rolling("high", STOCHASTIC, ("max",)), Rolling("low", STOCHASTIC, ("min",))]
    for n in w.shape:
        requests += [
            Rolling("r1", n, ("skew", "kurt")),
            Rolling("r1", n, ("corr",), other="r1_lag"),
            Rolling("path", n, ("mean",)),
            Rolling("hl2", n, ("mean",)),
            Rolling("gk", n, ("mean",)),
            Rolling("index", n, ("cov",), other="logc"),
        ]
    requests += [Rolling("volume", n, ("mean", "std")) for n in w.volume]
    return requests + [Rolling("signed_volume", w.volume[-1], ("mean",))]


def moment_inputs(o: pl.Expr, h: pl.Expr, l: pl.Expr, c: pl.Expr, v: pl.Expr) -> dict[str, pl.Expr]:
    """The series the rolling moments are taken of: 1-bar log returns and their lag, the path
    |close change|, the squared log range (Parkinson), the Garman-Klass variance, log price against
    the bar index, volume and return-signed volume; and the extremes of the close, high and low."""
    r1 = log_return(c, 1)
    return {
        "close": c,
        "high": h,
        "low": l,
        "r1": r1,
        "r1_lag": r1.shift(1),
        "path": c.diff().abs(),
        "hl2": (h / l).log().pow(2),
        "gk": 0.5 * (h / l).log().pow(2) - (2 * math.log(2) - 1) * (c / o).log().pow(2),
        "index": pl.int_range(pl.len()),
        "logc": c.log(),
        "volume": v,
        "signed_volume": r1.sign() * v,
    }


def technical_features(fs: FeatureSet, p: str, name: str, w: Windows) -> None:
    """The technical families on one instrument's bars, added to `fs` as `<name>_<feature>`.

    `p` prefixes the input columns; `name` prefixes the features (e.g. "mes_5min"). The core
    averages and the rolling moments come from two compiled passes, run by `fs.prepare` before the
    expressions; the tests hold both equal to their polars definitions.
    """
    o, h, l, c, v = (pl.col(f"{p}{x}") for x in ("open", "high", "low", "close", "volume"))
    core = f"__{name}_"  # the passes' columns, dropped when the table is finished

    def k(indicator: str) -> pl.Expr:
        return pl.col(f"{core}{indicator}")

    windows, requests, inputs = core_windows(w), rolling_requests(w), moment_inputs(o, h, l, c, v)
    fs.steps.append(lambda frame: with_core(frame, p, windows, core))
    fs.steps.append(lambda frame: with_moments(frame, inputs, requests, core))
    year = bars_per_year(fs.timeframe)
    for n in w.returns:
        fs.add(f"{name}_ret_{n}", log_return(c, n), f"log return over {n} bars", n)
    for n in w.volatility:
        fs.add(
            f"{name}_vol_{n}",
            k(f"std_r1_{n}") * math.sqrt(year),
            f"annualised std of 1-bar log returns over {n} bars",
            n,
        )
    for n in w.rsi:
        fs.add(f"{name}_rsi_{n}", k(f"rsi_{n}"), f"Wilder RSI over {n} bars (0-100)", n)
    for fast, slow, signal in w.macd:
        spans = f"{fast}_{slow}_{signal}"
        fs.add(
            f"{name}_macd_{fast}_{slow}",
            k(f"macd_{spans}"),
            f"MACD line EMA{fast}-EMA{slow}, as a fraction of price",
            slow,
        )
        fs.add(
            f"{name}_macd_signal_{signal}",
            k(f"macd_signal_{spans}"),
            f"MACD signal: EMA{signal} of the MACD line",
            slow + signal,
        )
        fs.add(
            f"{name}_macd_hist_{signal}", k(f"macd_hist_{spans}"), "MACD histogram: line minus signal", slow + signal
        )
    for n in w.atr:
        fs.add(f"{name}_atr_{n}", k(f"atr_{n}") / c, f"Wilder average true range over {n} bars, fraction of price", n)
    for n in w.bollinger:
        mean, sd = k(f"mean_{n}"), k(f"std_{n}")
        fs.add(
            f"{name}_boll_pos_{n}",
            (c - (mean - 2 * sd)) / (4 * sd),
            f"position in the {n}-bar 2-sigma Bollinger band (0 lower, 1 upper)",
            n,
        )
        if w.full:
            fs.add(f"{name}_boll_width_{n}", 4 * sd / mean, f"{n}-bar Bollinger band width / mean", n)
    for n in w.sma:
        fs.add(
            f"{name}_sma_dist_{n}", c / k(f"mean_{n}") - 1, f"close over its {n}-bar simple moving average, minus 1", n
        )
    for n in w.ema:
        fs.add(
            f"{name}_ema_dist_{n}",
            c / k(f"ema_{n}") - 1,
            f"close over its {n}-bar exponential moving average, minus 1",
            n,
        )
    for n in w.high:
        fs.add(f"{name}_drawdown_{n}", c / k(f"max_close_{n}") - 1, f"drawdown from the {n}-bar highest close", n)
        if w.full:
            fs.add(f"{name}_above_low_{n}", c / k(f"min_close_{n}") - 1, f"rise above the {n}-bar lowest close", n)
    for n in w.momentum:
        fs.add(
            f"{name}_mom_z_{n}",
            log_return(c, n) / (k(f"std_r1_{n}") * math.sqrt(n)),
            f"{n}-bar return in units of its own volatility (risk-adjusted momentum)",
            n,
        )
    if not w.full:
        return
    stoch_k = stochastic_k(c, k(f"min_low_{STOCHASTIC}"), k(f"max_high_{STOCHASTIC}"))
    fs.add(
        f"{name}_stoch_k_{STOCHASTIC}",
        stoch_k,
        f"stochastic %K: close in the {STOCHASTIC}-bar high-low range",
        STOCHASTIC,
    )
    fs.add(f"{name}_stoch_d_{STOCHASTIC}", stoch_k.rolling_mean(3), "stochastic %D: 3-bar mean of %K", STOCHASTIC + 2)
    fs.add(f"{name}_range", (h - l) / c, "bar range (high - low) / close")
    fs.add(
        f"{name}_close_loc",
        pl.when(h > l).then((c - l) / (h - l)).otherwise(0.5),
        "close location in the bar (0 at low, 1 at high; 0.5 when the bar did not move)",
    )
    fs.add(f"{name}_body", c / o - 1, "bar body: close / open - 1")
    fs.add(f"{name}_gap", o / c.shift(1) - 1, "gap: open / previous close - 1", 1)
    for n in w.shape:
        fs.add(f"{name}_skew_{n}", k(f"skew_r1_{n}"), f"skewness of 1-bar returns over {n} bars", n)
        fs.add(f"{name}_kurt_{n}", k(f"kurt_r1_{n}"), f"excess kurtosis of 1-bar returns over {n} bars", n)
        fs.add(
            f"{name}_autocorr_{n}", k(f"corr_r1_r1_lag_{n}"), f"lag-1 autocorrelation of returns over {n} bars", n + 1
        )
        fs.add(
            f"{name}_efficiency_{n}",
            (c - c.shift(n)).abs() / (k(f"mean_path_{n}") * n),
            f"Kaufman efficiency: net move / path length over {n} bars",
            n,
        )
        fs.add(
            f"{name}_parkinson_{n}",
            (k(f"mean_hl2_{n}") / (4 * math.log(2))).sqrt() * math.sqrt(year),
            f"Parkinson high-low volatility over {n} bars, annualised",
            n,
        )
        fs.add(
            f"{name}_garman_klass_{n}",
            k(f"mean_gk_{n}").sqrt() * math.sqrt(year),
            f"Garman-Klass volatility over {n} bars, annualised",
            n,
        )
        # cov(t, log c) / var(t): the index 0, 1, 2, ... has the sample variance n (n + 1) / 12 in every window.
        fs.add(
            f"{name}_slope_{n}",
            k(f"cov_index_logc_{n}") / (n * (n + 1) / 12),
            f"least-squares slope of log price per bar over {n} bars",
            n,
        )
    for n in w.volume:
        fs.add(
            f"{name}_volume_z_{n}",
            (v - k(f"mean_volume_{n}")) / k(f"std_volume_{n}"),
            f"volume z-score over {n} bars",
            n,
        )
    last = w.volume[-1]
    fs.add(
        f"{name}_obv_slope_{last}",
        k(f"mean_signed_volume_{last}") / k(f"mean_volume_{last}"),
        f"on-balance volume over {last} bars, as a fraction of volume traded",
        last,
    )
