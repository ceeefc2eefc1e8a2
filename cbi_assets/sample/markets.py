"""Daily futures markets: linked settlement paths, and the bars of each symbol's two nearest contracts.

Every market is an anchor path through its approximate history (`anchors`) times a mean-reverting
deviation in logs, driven by fat-tailed shocks with GARCH volatility around a regime level. The
soybean complex is simulated as beans, board crush and oil share, from which oil and meal follow.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from cbi_assets.catalogue import FUTURES
from cbi_assets.sample import anchors
from cbi_assets.sample.contracts import contract_chain, nearest_two
from cbi_assets.sample.shocks import (
    correlated,
    fat_tailed,
    garch_multiplier,
    mean_reverting,
    normals,
)

TRADING_DAYS = 252
# Board crush conversion: a bushel of soybeans yields 11 lb of oil and 44 lb (0.022 short ton) of meal.
OIL_LB_PER_BUSHEL_IN_DOLLARS = 0.11  # cents/lb of oil -> $/bu
MEAL_TONS_PER_BUSHEL = 0.022  # $/short ton of meal -> $/bu
_GALLONS_PER_BARREL = 42.0
_HO_CRUDE_BETA = 0.75  # heating oil's log move per log move of crude away from their paths
# Which simulated market prices each symbol's contracts: MES is the micro ES contract.
PRICED_FROM = {"ZL": "ZL", "ZS": "ZS", "ZM": "ZM", "CL": "CL", "HO": "HO", "ES": "ES", "MES": "ES"}

# WTI's May 2020 contract settled at -$37.63 on 20 April 2020, the day before it expired. Prices
# are (open, high, low, close) of CLK0; the log-space model cannot produce them, so they are set.
_NEGATIVE_WTI = {
    dt.date(2020, 4, 20): (17.73, 17.85, -40.32, -37.63),
    dt.date(2020, 4, 21): (-14.00, 13.86, -16.74, 10.01),
}


@dataclass(frozen=True)
class MarketHistory:
    """Daily paths on XNYS sessions: the level every contract of a market is priced from."""

    sessions: np.ndarray  # datetime64[D]
    spot: dict[str, np.ndarray]  # settlement level before carry, in the contract's unit
    sigma: dict[str, np.ndarray]  # conditional daily volatility of log returns
    shocks: dict[str, np.ndarray]  # standardized daily shocks; volume reacts to their size
    carry: dict[str, np.ndarray]  # annual log carry from one delivery to a later one
    crush: np.ndarray  # board crush margin, $/bu
    oil_share: np.ndarray  # oil value over oil plus meal value
    policy_rate: np.ndarray  # effective fed funds, percent


@dataclass(frozen=True)
class _Paths:
    """The per-market paths, filled market by market: later markets lean on earlier shocks."""

    spot: dict[str, np.ndarray]
    sigma: dict[str, np.ndarray]
    shocks: dict[str, np.ndarray]


def _anchored(anchor: np.ndarray, sigma: np.ndarray, shocks: np.ndarray, spread: float) -> np.ndarray:
    """anchor * exp(x): x reverts to zero fast enough that its spread stays about `spread` in logs.

    Tying the pull to volatility keeps crisis lows near their historical dates and depths while
    calm markets wander almost like a random walk.
    """
    phi = np.sqrt(np.clip(1.0 - (sigma / spread) ** 2, 0.5, 0.9995))
    x = np.empty(len(shocks))
    level = 0.0
    for i in range(len(shocks)):
        level = phi[i] * level + sigma[i] * shocks[i]
        x[i] = level
    return anchor * np.exp(x)


def _ewma_volatility(log_return: np.ndarray, decay: float = 0.94, initial: float = 0.25) -> np.ndarray:
    """RiskMetrics volatility of a derived price, known at each day's close (causal)."""
    start = (initial / np.sqrt(TRADING_DAYS)) ** 2
    from scipy.signal import lfilter

    variance, _ = lfilter([1 - decay], [1.0, -decay], np.square(log_return), zi=[decay * start])
    return np.sqrt(variance)


def _regime_sigma(table: anchors.Table, sessions: np.ndarray, shocks: np.ndarray) -> np.ndarray:
    return anchors.follow(table, sessions, log=False) / np.sqrt(TRADING_DAYS) * np.sqrt(garch_multiplier(shocks))


def _ramp(sessions: np.ndarray, start: str, end: str, before: float, after: float) -> np.ndarray:
    return anchors.follow(((start, before), (end, after)), sessions, log=False)


def _stock_index(seed: int, sessions: np.ndarray, paths: _Paths) -> None:
    z = fat_tailed(seed, "ES", len(sessions))
    paths.sigma["ES"] = _regime_sigma(anchors.ES_VOL, sessions, z)
    paths.spot["ES"] = _anchored(anchors.follow(anchors.ES_LEVEL, sessions), paths.sigma["ES"], z, spread=0.05)
    paths.shocks["ES"] = z


def _energy(seed: int, sessions: np.ndarray, paths: _Paths) -> None:
    n = len(sessions)
    # Oil trades with risk assets once the 2008 crisis ties everything to growth.
    growth_link = _ramp(sessions, "2008-06-30", "2009-06-30", 0.1, 0.4)
    z = correlated(paths.shocks["ES"], fat_tailed(seed, "CL", n), growth_link)
    paths.sigma["CL"] = _regime_sigma(anchors.CL_VOL, sessions, z)
    crude_path = anchors.follow(anchors.CL_LEVEL, sessions)
    paths.spot["CL"] = _anchored(crude_path, paths.sigma["CL"], z, spread=0.09)
    paths.shocks["CL"] = z

    # Heating oil is crude per gallon times a distillate crack. Distillates follow crude's swings
    # only in part (the crack narrows when crude spikes), plus the crack's own wandering.
    crack_sigma = 0.008
    crack_shocks = normals(seed, "HO.crack", n)
    crude_swing = np.log(paths.spot["CL"] / crude_path)
    crack_wander = mean_reverting(crack_sigma * crack_shocks, 0.98)
    heating_path = anchors.follow(anchors.HO_CRACK_RATIO, sessions) * crude_path / _GALLONS_PER_BARREL
    paths.spot["HO"] = heating_path * np.exp(_HO_CRUDE_BETA * crude_swing + crack_wander)
    crude_part = _HO_CRUDE_BETA * paths.sigma["CL"]
    paths.sigma["HO"] = np.sqrt(np.square(crude_part) + crack_sigma**2)
    paths.shocks["HO"] = (crude_part * z + crack_sigma * crack_shocks) / paths.sigma["HO"]


def _soybean_complex(seed: int, sessions: np.ndarray, paths: _Paths) -> tuple[np.ndarray, np.ndarray]:
    """Beans, the board crush margin and the oil share; oil and meal follow from the identities

    crush = 0.022 * ZM + 0.11 * ZL - ZS / 100 and oil share = 0.11 * ZL / (0.11 * ZL + 0.022 * ZM).
    """
    n = len(sessions)
    z = correlated(paths.shocks["CL"], fat_tailed(seed, "ZS", n), 0.25)
    paths.sigma["ZS"] = _regime_sigma(anchors.ZS_VOL, sessions, z)
    paths.spot["ZS"] = _anchored(anchors.follow(anchors.ZS_LEVEL, sessions), paths.sigma["ZS"], z, spread=0.08)
    paths.shocks["ZS"] = z

    crush = anchors.follow(anchors.CRUSH_MARGIN, sessions) * np.exp(
        mean_reverting(0.05 * normals(seed, "crush", n), 0.97)
    )
    # Soybean oil became a diesel feedstock: its share of the crush moves with heating oil, and
    # more so once biomass-based diesel mandates grew after 2012.
    energy_link = _ramp(sessions, "2011-01-03", "2013-01-02", 0.2, 0.7)
    share_innovations = 0.011 * correlated(paths.shocks["HO"], normals(seed, "oil_share", n), energy_link)
    share_anchor = anchors.follow(anchors.OIL_SHARE, sessions, log=False)
    logit = np.log(share_anchor / (1 - share_anchor)) + mean_reverting(share_innovations, 0.99)
    oil_share = 1.0 / (1.0 + np.exp(-logit))

    crush_value = paths.spot["ZS"] / 100.0 + crush  # $/bu of oil and meal from one bushel
    paths.spot["ZL"] = oil_share * crush_value / OIL_LB_PER_BUSHEL_IN_DOLLARS
    paths.spot["ZM"] = (1.0 - oil_share) * crush_value / MEAL_TONS_PER_BUSHEL
    for product in ("ZL", "ZM"):
        log_return = np.diff(np.log(paths.spot[product]), prepend=np.log(paths.spot[product][0]))
        paths.sigma[product] = _ewma_volatility(log_return)
        paths.shocks[product] = log_return / paths.sigma[product]
    return crush, oil_share


def _carry(sessions: np.ndarray, paths: _Paths, policy_rate: np.ndarray) -> dict[str, np.ndarray]:
    """Annual log carry between deliveries: financing less dividends for ES; for commodities,
    tight markets (prices above their path) backwardate and gluts pay storage in contango."""
    dividend_yield = anchors.follow(anchors.SP500_DIVIDEND_YIELD, sessions, log=False)
    ags_deviation = np.log(paths.spot["ZS"] / anchors.follow(anchors.ZS_LEVEL, sessions))
    ags = np.clip(0.045 - 0.7 * ags_deviation, -0.30, 0.15)
    cl_deviation = np.log(paths.spot["CL"] / anchors.follow(anchors.CL_LEVEL, sessions))
    crude = np.clip(anchors.follow(anchors.CL_CARRY, sessions, log=False) - 0.3 * cl_deviation, -0.6, 1.5)
    return {"ES": (policy_rate - dividend_yield) / 100.0, "ZS": ags, "ZL": ags, "ZM": ags, "CL": crude, "HO": crude}


def simulate_markets(seed: int, sessions: np.ndarray) -> MarketHistory:
    """The linked daily paths of ES, CL, HO and the soybean complex on `sessions`."""
    paths = _Paths({}, {}, {})
    _stock_index(seed, sessions, paths)
    _energy(seed, sessions, paths)
    crush, oil_share = _soybean_complex(seed, sessions, paths)
    policy_rate = anchors.step(anchors.FED_FUNDS, sessions)
    return MarketHistory(
        sessions=sessions,
        spot=paths.spot,
        sigma=paths.sigma,
        shocks=paths.shocks,
        carry=_carry(sessions, paths, policy_rate),
        crush=crush,
        oil_share=oil_share,
        policy_rate=policy_rate,
    )


def _daily_shape(history: MarketHistory, market: str, seed: int) -> tuple[np.ndarray, ...]:
    """Open, high, low, close of the carry-free level: a small overnight gap, then the day's range."""
    close = history.spot[market]
    sigma = history.sigma[market]
    gap, up, down = normals(seed, f"{market}.ohlc", len(close), 3).T
    previous = np.concatenate([close[:1], close[:-1]])
    open_ = previous * np.exp(0.25 * sigma * gap)
    high = np.maximum(open_, close) * np.exp(0.55 * sigma * np.abs(up))
    low = np.minimum(open_, close) * np.exp(-0.55 * sigma * np.abs(down))
    return open_, high, low, close


def _nearest_share(sessions_to_roll: np.ndarray) -> np.ndarray:
    """The nearest contract's share of the day's volume: it hands the lead over on its roll date."""
    return 0.04 + 0.92 / (1.0 + np.exp(-1.2 * (sessions_to_roll - 0.5)))


def _daily_volume(history: MarketHistory, symbol: str, seed: int) -> np.ndarray:
    level = anchors.follow(anchors.VOLUME[symbol], history.sessions)
    persistent = mean_reverting(0.12 * normals(seed, f"{symbol}.volume", len(level)), 0.9)
    # Big moves draw volume.
    surprise = 0.3 * (np.abs(history.shocks[PRICED_FROM[symbol]]) - 0.8)
    return level * np.exp(persistent + np.clip(surprise, -0.3, 1.2))


def futures_bars(history: MarketHistory, symbol: str, seed: int, business_days: np.ndarray) -> pl.DataFrame:
    """Daily bars of the two nearest unexpired contracts of `symbol` on every session.

    Each contract is the carry-free level times exp(carry * years to its expiry), so a contract's
    own series moves smoothly and the front-by-volume series steps at rolls like a real one.
    Prices are integer ticks of the catalogue's tick size.
    """
    future = FUTURES[symbol]
    market = PRICED_FROM[symbol]
    days = history.sessions
    first_year = int(days[0].astype("datetime64[Y]").astype(int)) + 1970
    last_year = int(days[-1].astype("datetime64[Y]").astype(int)) + 1970 + 1
    chain = contract_chain(symbol, first_year, last_year, business_days)
    nearest = nearest_two(chain, days)

    shape = _daily_shape(history, market, seed)
    total_volume = _daily_volume(history, symbol, seed)
    day_index = np.searchsorted(business_days, days)
    roll_index = np.searchsorted(business_days, np.array([c.roll for c in chain], dtype="datetime64[D]"))
    nearest_share = _nearest_share(roll_index[nearest] - day_index)

    frames = []
    for rank, share in ((0, nearest_share), (1, 1.0 - nearest_share)):
        contract = nearest + rank
        expiry = np.array([c.expiry for c in chain], dtype="datetime64[D]")[contract]
        years = (expiry - days).astype(np.float64) / 365.25
        factor = np.exp(history.carry[market] * years)
        ticks = [np.rint(level * factor / future.tick_size).astype(np.int64) for level in shape]
        frames.append(
            pl.DataFrame(
                {
                    "date": days,
                    "instrument_id": np.array([c.instrument_id for c in chain], dtype=np.uint32)[contract],
                    "raw_symbol": np.array([c.raw_symbol for c in chain])[contract],
                    "expiration": expiry,
                    "rank": np.full(len(days), rank, dtype=np.uint8),
                    "open": ticks[0],
                    "high": ticks[1],
                    "low": ticks[2],
                    "close": ticks[3],
                    "volume": np.maximum(1, np.rint(total_volume * share)).astype(np.uint64),
                }
            )
        )
    bars = pl.concat(frames)
    if symbol == "CL":
        bars = _negative_wti(bars, future.tick_size)
    leader = pl.col("volume") == pl.col("volume").max().over("date")
    first_leader = leader & (pl.col("rank") == pl.col("rank").filter(leader).min().over("date"))
    return bars.with_columns(front=first_leader).sort("date", "instrument_id")


def _negative_wti(bars: pl.DataFrame, tick: float) -> pl.DataFrame:
    for day, prices in _NEGATIVE_WTI.items():
        on_day = (pl.col("date") == day) & (pl.col("raw_symbol") == "CLK0")
        ticks = [round(p / tick) for p in prices]
        bars = bars.with_columns(
            [
                pl.when(on_day).then(pl.lit(t, pl.Int64)).otherwise(pl.col(c)).alias(c)
                for c, t in zip(("open", "high", "low", "close"), ticks, strict=False)
            ]
        )
    return bars


def front_bars(bars: pl.DataFrame) -> pl.DataFrame:
    """One row a day: the contract with the larger volume (what `SYM.v.0` follows)."""
    return bars.filter(pl.col("front")).drop("front")
