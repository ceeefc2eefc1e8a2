"""The domain catalogue: markets, horizons, timeframes, regimes and sources.

This is the one source of truth. Partitions, assets, the sample source and the tests derive
from it; nothing else spells out a market, a horizon, a regime or a series by hand.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

# --- Timeframes -------------------------------------------------------------------------------

# MES bars, all derived from one canonical 1-minute table. Minutes per bar; a trading day for 1d.
TIMEFRAMES: dict[str, int | None] = {
    "1min": 1,
    "5min": 5,
    "15min": 15,
    "30min": 30,
    "1h": 60,
    "4h": 240,
    "1d": None,
}
INTRADAY_TIMEFRAMES = tuple(name for name, minutes in TIMEFRAMES.items() if minutes)


# --- Markets and horizons ---------------------------------------------------------------------


@dataclass(frozen=True)
class Horizon:
    """A forecast horizon: `bars` bars of `timeframe` ahead."""

    name: str
    bars: int
    timeframe: Literal["1min", "1d"]

    @property
    def intraday(self) -> bool:
        return self.timeframe != "1d"


@dataclass(frozen=True)
class Market:
    """A market we forecast: ZL or MES. Its `key` ("zl", "mes") prefixes its Dagster assets."""

    symbol: str
    name: str
    horizons: tuple[Horizon, ...]
    timeframes: tuple[str, ...]
    related: tuple[str, ...]
    # One side of a trade in basis points of price: a tick of slippage plus exchange and broker
    # fees. Backtests and the Sharpe ratio of a forecast's sign are net of it.
    cost_bps: float

    @property
    def key(self) -> str:
        return self.symbol.lower()

    def __str__(self) -> str:
        return self.symbol

    def horizon(self, name: str) -> Horizon:
        for h in self.horizons:
            if h.name == name:
                return h
        valid = ", ".join(h.name for h in self.horizons)
        raise KeyError(f"{self.symbol} has no horizon {name!r}; valid horizons: {valid}")

    @property
    def daily_horizons(self) -> tuple[Horizon, ...]:
        return tuple(h for h in self.horizons if not h.intraday)


def _daily(name: str, bars: int) -> Horizon:
    return Horizon(name, bars, "1d")


ZL = Market(
    symbol="ZL",
    name="CBOT soybean oil futures",
    # Trading days: a week, a month, a quarter, half a year, a year.
    horizons=(_daily("1w", 5), _daily("1m", 21), _daily("3m", 63), _daily("6m", 126), _daily("12m", 252)),
    timeframes=("1d",),
    related=("ZS", "ZM", "CL", "HO"),
    cost_bps=3.0,  # 0.01 c/lb on ~50 c/lb is 2 bp, plus fees on a $30k contract
)

MES = Market(
    symbol="MES",
    name="CME Micro E-mini S&P 500 futures",
    horizons=(
        # Intraday horizons count 1-minute bars.
        *(Horizon(tf, minutes, "1min") for tf, minutes in TIMEFRAMES.items() if minutes),
        # Daily horizons count trading days: 7 calendar days are 5 sessions, 30 are 21.
        _daily("1d", 1),
        _daily("7d", 5),
        _daily("30d", 21),
        _daily("3m", 63),
        _daily("6m", 126),
        _daily("12m", 252),
    ),
    timeframes=tuple(TIMEFRAMES),
    related=("ES",),
    cost_bps=1.0,  # a quarter point on ~5,000 is 0.5 bp, plus $0.6 of fees on a $25k contract
)

MARKETS: dict[str, Market] = {m.symbol: m for m in (ZL, MES)}


def market(name: str | Market) -> Market:
    """The market called `name` ("ZL", "zl", "MES", "mes")."""
    if isinstance(name, Market):
        return name
    found = MARKETS.get(name.upper())
    if found is None:
        raise KeyError(f"no market {name!r} in the catalogue; markets: {', '.join(MARKETS)}")
    return found


# --- Named regimes ----------------------------------------------------------------------------


# How long after a named regime began the desk could have known it: a quarter of sessions to see it in
# the data and name it. Walk-forward folds weight their training rows only by regimes declared by then.
DECLARATION_LAG = dt.timedelta(days=91)


@dataclass(frozen=True)
class Regime:
    name: str
    start: dt.date | None  # None: open towards the past
    end: dt.date | None  # None: open towards the future
    weight: float
    declared: dt.date | None = None  # when the desk named it; None: its start plus DECLARATION_LAG

    @property
    def declared_on(self) -> dt.date | None:
        """When the regime was known; None for the first (open towards the past), known from the start."""
        if self.declared is not None:
            return self.declared
        return self.start + DECLARATION_LAG if self.start is not None else None

    def contains(self, day: dt.date) -> bool:
        return (self.start is None or day >= self.start) and (self.end is None or day <= self.end)


def _d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


# The desk's plan; the weights scale training samples from each period.
REGIMES: tuple[Regime, ...] = (
    Regime("historical_pre2000", None, _d("1999-12-31"), 50),
    Regime("dotcom_bust_2000_2002", _d("2000-01-01"), _d("2002-12-31"), 100),
    Regime("commodity_boom_2003_2008", _d("2003-01-01"), _d("2008-06-30"), 150),
    Regime("financial_crisis_2008_2009", _d("2008-07-01"), _d("2009-06-30"), 800),
    Regime("qe_recovery_2009_2011", _d("2009-07-01"), _d("2011-12-31"), 200),
    Regime("biofuel_expansion_2012_2014", _d("2012-01-01"), _d("2014-12-31"), 300),
    Regime("commodity_slump_2015_2016", _d("2015-01-01"), _d("2016-12-31"), 300),
    Regime("trade_war_2017_2019", _d("2017-01-01"), _d("2019-12-31"), 1500),
    Regime("covid_crisis_2020", _d("2020-01-01"), _d("2020-12-31"), 800),
    Regime("inflation_2021_2022", _d("2021-01-01"), _d("2022-12-31"), 1200),
    Regime("trump_2023_2025", _d("2023-01-01"), None, 5000),
)


def regime_of(day: dt.date) -> Regime:
    for regime in REGIMES:
        if regime.contains(day):
            return regime
    raise ValueError(f"no named regime contains {day}; the regime calendar must cover every date")


# --- Sources ----------------------------------------------------------------------------------

DATABENTO_DATASET = "GLBX.MDP3"

# Daily settlements follow the NYSE session calendar: CBOT, NYMEX and CME settle on the same
# days (Globex holiday sessions carry no settlement), which the real daily files confirm.
SETTLEMENT_CALENDAR = "XNYS"
EXCHANGE_TIMEZONE = "America/Chicago"
HISTORY_START = dt.date(2000, 1, 1)

# CME Globex equity futures trade 17:00-16:00 Chicago time with a daily halt from 16:00 to 17:00.
# A session's trade date is the day it closes on, so an evening bar belongs to the next session.
GLOBEX_OPEN = dt.time(17, 0)
GLOBEX_CLOSE = dt.time(16, 0)
# Half days (the day after Thanksgiving, Christmas Eve, July 3) halt Globex equity futures around midday
# Chicago. exchange_calendars' CME equity calendar carries most of them, and NYSE's the July 3 ones it lacks;
# the earlier of the two closes is taken.
GLOBEX_EARLY_CLOSE_CALENDARS = ("CMES", SETTLEMENT_CALENDAR)
RTH_OPEN = dt.time(8, 30)
RTH_CLOSE = dt.time(15, 0)

MONTH_CODES = "FGHJKMNQUVXZ"  # January .. December


@dataclass(frozen=True)
class Future:
    symbol: str
    name: str
    exchange: str
    unit: str
    tick_size: float
    contract_months: str  # month codes that are listed
    area: Literal["ZL", "MES"]  # which market's lake layer stores it
    listed: dt.date = HISTORY_START
    # WTI settled at -$37.63 on 2020-04-20; other markets have never priced below zero.
    negative_prices_possible: bool = False

    @property
    def continuous(self) -> str:
        """Databento continuous symbol: the front contract ranked by volume."""
        return f"{self.symbol}.v.0"

    @property
    def parent(self) -> str:
        """Databento parent symbol: every listed outright contract."""
        return f"{self.symbol}.FUT"


FUTURES: dict[str, Future] = {
    f.symbol: f
    for f in (
        Future("ZL", "Soybean oil", "CBOT", "US cents/lb", 0.01, "FHKNQUVZ", "ZL"),
        Future("ZS", "Soybeans", "CBOT", "US cents/bu", 0.25, "FHKNQUX", "ZL"),
        Future("ZM", "Soybean meal", "CBOT", "USD/short ton", 0.1, "FHKNQUVZ", "ZL"),
        Future("CL", "WTI crude oil", "NYMEX", "USD/bbl", 0.01, MONTH_CODES, "ZL", negative_prices_possible=True),
        Future("HO", "NY Harbor ULSD (heating oil)", "NYMEX", "USD/gal", 0.0001, MONTH_CODES, "ZL"),
        Future("ES", "E-mini S&P 500", "CME", "index points", 0.25, "HMUZ", "MES"),
        Future("MES", "Micro E-mini S&P 500", "CME", "index points", 0.25, "HMUZ", "MES", listed=dt.date(2019, 5, 6)),
    )
}

Schema = Literal["ohlcv-1d", "ohlcv-1m", "trades", "tbbo", "mbp-10", "definition"]
# MES is the one market we also ingest below the daily bar.
INTRADAY_SCHEMAS: tuple[Schema, ...] = ("ohlcv-1m", "trades", "tbbo", "mbp-10", "definition")


@dataclass(frozen=True)
class Freshness:
    """How long an input may go without a new value before it is stale: its last value is no longer carried
    forward (the features built on it become null) and the master tables' check names it."""

    sessions: int = 0  # sessions since the value was known (daily and weekly series, settlements)
    days: int = 0  # calendar days since the value was known, past its release lag (monthly series)

    def describe(self) -> str:
        return f"{self.sessions} sessions" if self.sessions else f"{self.days} days past its release"


# A market closed for a long weekend misses 2 sessions; a week without a value is a source that stopped.
DAILY_FRESHNESS = Freshness(sessions=5)
FRESHNESS: dict[str, Freshness] = {
    "daily": DAILY_FRESHNESS,
    "weekly": Freshness(sessions=10),
    # A monthly value is replaced about 31 days after it was published; 45 allows for a late release.
    "monthly": Freshness(days=45),
}
# An input stale for longer than this has ended: a warning in the UI, its features null from then on.
ENDED_AFTER_SESSIONS = 63


@dataclass(frozen=True)
class FredSeries:
    series_id: str
    title: str
    frequency: Literal["daily", "weekly", "monthly"]
    unit: str
    start: dt.date = HISTORY_START

    @property
    def freshness(self) -> Freshness:
        return FRESHNESS[self.frequency]


FRED_SERIES: dict[str, FredSeries] = {
    s.series_id: s
    for s in (
        FredSeries("DGS10", "10-year Treasury constant maturity yield", "daily", "percent"),
        FredSeries("DGS2", "2-year Treasury constant maturity yield", "daily", "percent"),
        FredSeries("T10Y2Y", "10-year minus 2-year Treasury yield spread", "daily", "percent"),
        FredSeries("DFF", "Effective federal funds rate", "daily", "percent"),
        FredSeries("DTWEXBGS", "Nominal broad US dollar index", "daily", "index Jan 2006=100", dt.date(2006, 1, 2)),
        FredSeries("T10YIE", "10-year breakeven inflation rate", "daily", "percent", dt.date(2003, 1, 2)),
        FredSeries("VIXCLS", "CBOE volatility index (VIX) close", "daily", "index"),
        FredSeries("DCOILWTICO", "WTI crude oil spot price, Cushing", "daily", "USD/bbl"),
        FredSeries("BAMLH0A0HYM2", "ICE BofA US high yield option-adjusted spread", "daily", "percent"),
        FredSeries("DEXCHUS", "Chinese yuan renminbi per US dollar", "daily", "CNY/USD"),
        FredSeries("DEXUSEU", "US dollars per euro", "daily", "USD/EUR"),
        FredSeries("DEXJPUS", "Japanese yen per US dollar", "daily", "JPY/USD"),
        FredSeries("CPIAUCSL", "Consumer price index, all urban consumers (SA)", "monthly", "index 1982-84=100"),
    )
}


@dataclass(frozen=True)
class YahooTicker:
    ticker: str
    key: str  # lake-friendly name
    title: str


YAHOO_TICKERS: dict[str, YahooTicker] = {
    t.ticker: t
    for t in (
        YahooTicker("ZL=F", "zl", "Soybean oil front-month futures (long daily history)"),
        YahooTicker("^VIX", "vix", "CBOE volatility index"),
        YahooTicker("DX-Y.NYB", "dxy", "ICE US dollar index"),
        YahooTicker("BRL=X", "brl", "Brazilian real per US dollar"),
        YahooTicker("MYR=X", "myr", "Malaysian ringgit per US dollar"),
    )
}
