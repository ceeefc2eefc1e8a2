"""The embedded sample: layout, realism the later layers rely on, determinism and prefix stability.

Every file is read back the way the lake reads it (DBN through `cbi_assets.raw.dbn`, CSVs with
polars), so these tests check what a consumer sees.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import re
import warnings
from pathlib import Path

import exchange_calendars as xcals
import numpy as np
import polars as pl
import pytest

from cbi_assets.catalogue import FRED_SERIES, FUTURES, YAHOO_TICKERS
from cbi_assets.raw.dbn import frame_from_store, open_dbn
from cbi_assets.sample import MARKER, SampleConfig, build_sample
from cbi_assets.sample.markets import (
    MEAL_TONS_PER_BUSHEL,
    OIL_LB_PER_BUSHEL_IN_DOLLARS,
    simulate_markets,
)
from cbi_assets.sample.sessions import last_session, settlement_sessions

CONFIG = SampleConfig(end=dt.date(2024, 6, 28), intraday_sessions=5, tick_sessions=1, trades_per_session=6_000)
# One session later, with windows that still hold CONFIG's last session.
LATER = dataclasses.replace(CONFIG, end=dt.date(2024, 7, 1), tick_sessions=2)
DAILY_SYMBOLS = ("ZL", "ZS", "ZM", "CL", "HO", "ES", "MES")
CHICAGO = "America/Chicago"


# --- Reading the sample back ------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return build_sample(CONFIG, tmp_path_factory.mktemp("sample") / "sample")


@pytest.fixture(scope="module")
def later_sample(tmp_path_factory) -> Path:
    return build_sample(LATER, tmp_path_factory.mktemp("later") / "sample")


def dbn(folder: Path, name: str) -> pl.DataFrame:
    path = folder / "dbn" / "GLBX.MDP3" / f"{name}.dbn.zst"
    return frame_from_store(open_dbn(path, str(path)), str(path))


def daily(folder: Path, symbol: str) -> pl.DataFrame:
    return dbn(folder, f"{symbol}.FUT.ohlcv-1d").with_columns(date=pl.col("ts_event").dt.date())


def front(bars: pl.DataFrame) -> pl.DataFrame:
    """The contract with the larger volume each day."""
    return bars.sort("date", "volume", descending=[False, True]).unique("date", keep="first", maintain_order=True)


def same_contract_returns(bars: pl.DataFrame) -> pl.DataFrame:
    """Daily log returns of the front contract against its own previous close (no roll jumps)."""
    lead = front(bars).select("date", "instrument_id", "close")
    previous = (
        bars.sort("date")
        .with_columns(
            previous_close=pl.col("close").shift(1).over("instrument_id"),
        )
        .select("date", "instrument_id", "previous_close")
    )
    return (
        lead.join(previous, on=["date", "instrument_id"])
        .drop_nulls()
        .with_columns(ret=(pl.col("close") / pl.col("previous_close")).log())
        .select("date", "ret")
    )


def fred(folder: Path, series_id: str) -> pl.DataFrame:
    path = folder / "fred" / f"{series_id}.csv"
    return pl.read_csv(path, try_parse_dates=True, schema_overrides={"value": pl.Float64})


def yahoo(folder: Path, ticker: str) -> pl.DataFrame:
    return pl.read_csv(folder / "yahoo" / f"{ticker}.csv", try_parse_dates=True)


@functools.lru_cache(maxsize=4)
def xnys_sessions(start: dt.date, end: dt.date) -> list[dt.date]:
    with warnings.catch_warnings():  # a pandas deprecation inside exchange_calendars
        warnings.simplefilter("ignore", DeprecationWarning)
        calendar = xcals.get_calendar("XNYS", start=start.isoformat(), end=end.isoformat())
    return [d.date() for d in calendar.sessions]


def ordered_ohlc() -> pl.Expr:
    low_ok = pl.col("low") <= pl.min_horizontal("open", "close")
    return low_ok & (pl.col("high") >= pl.max_horizontal("open", "close"))


def between(frame: pl.DataFrame, start: str, end: str, column: str = "date") -> pl.DataFrame:
    return frame.filter(pl.col(column).is_between(dt.date.fromisoformat(start), dt.date.fromisoformat(end)))


def on_tick_grid(values: pl.Series, tick: float) -> bool:
    ticks = values.to_numpy() / tick
    return bool(np.all(np.abs(ticks - np.rint(ticks)) < 1e-6))


def with_trade_date(frame: pl.DataFrame) -> pl.DataFrame:
    """Chicago wall clock and trade date: a session opening at 17:00 belongs to the next day."""
    local = pl.col("ts_event").dt.convert_time_zone(CHICAGO)
    return frame.with_columns(
        local=local,
        trade_date=(local + pl.duration(hours=7)).dt.date(),
    )


def inside_sessions(ticks: pl.DataFrame) -> bool:
    """Event and receive times both fall between the 17:00 open and 16:00 close of one session."""
    midnight = pl.col("trade_date").cast(pl.Datetime("ns")).dt.replace_time_zone(CHICAGO)
    bounds = ticks.with_columns(
        opens=(midnight - pl.duration(hours=7)).dt.convert_time_zone("UTC"),
        closes=(midnight + pl.duration(hours=16)).dt.convert_time_zone("UTC"),
    )
    inside = (pl.col("ts_event") >= pl.col("opens")) & (pl.col("ts_recv") < pl.col("closes"))
    return bool(bounds.select(inside.all()).item())


def all_files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


# --- Layout and marker -------------------------------------------------------------------------


def test_layout_holds_every_source_file(sample):
    expected = {Path(MARKER)}
    expected |= {Path(f"dbn/GLBX.MDP3/{s}.FUT.ohlcv-1d.dbn.zst") for s in DAILY_SYMBOLS}
    expected |= {Path(f"dbn/GLBX.MDP3/MES.v.0.{s}.dbn.zst") for s in ("ohlcv-1m", "trades", "tbbo", "mbp-10")}
    expected |= {Path("dbn/GLBX.MDP3/MES.FUT.definition.dbn.zst")}
    expected |= {Path(f"fred/{s}.csv") for s in FRED_SERIES}
    expected |= {Path(f"yahoo/{t}.csv") for t in YAHOO_TICKERS}
    assert set(all_files(sample)) == expected


def test_marker_holds_the_config_and_a_complete_folder_is_left_untouched(sample):
    assert json.loads((sample / MARKER).read_text()) == {
        "end": "2024-06-28",
        "seed": 20_240_601,
        "start": "2000-01-03",
        "intraday_sessions": 5,
        "tick_sessions": 1,
        "trades_per_session": 6_000,
    }
    before = {p: (sample / p).stat().st_mtime_ns for p in all_files(sample)}
    assert build_sample(CONFIG, sample) == sample
    assert {p: (sample / p).stat().st_mtime_ns for p in all_files(sample)} == before
    assert not list(sample.parent.glob(".*building*"))  # no staging folder left behind


def test_config_is_checked_and_a_holiday_end_means_the_session_before():
    with pytest.raises(ValueError, match="tick_sessions"):
        SampleConfig(end=dt.date(2024, 6, 28), intraday_sessions=2, tick_sessions=3)
    with pytest.raises(ValueError, match="intraday_sessions"):
        SampleConfig(end=dt.date(2024, 6, 28), intraday_sessions=0, tick_sessions=0)
    assert last_session(dt.date(2024, 6, 30)) == dt.date(2024, 6, 28)  # Sunday
    assert last_session(dt.date(2024, 7, 4)) == dt.date(2024, 7, 3)  # Independence Day


# --- Daily futures -----------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", DAILY_SYMBOLS)
def test_daily_bars_hold_the_two_nearest_contracts_every_session(sample, symbol):
    bars = daily(sample, symbol)
    first = max(FUTURES[symbol].listed, CONFIG.start)
    assert bars["date"].unique().sort().to_list() == xnys_sessions(first, CONFIG.end)
    assert bars.group_by("date").len()["len"].unique().to_list() == [2]
    assert bars["instrument_id"].n_unique() > 2
    # Stamped at midnight UTC, sorted by time then instrument, requested as the parent symbol.
    assert (bars["ts_event"].dt.time() == dt.time(0)).all()
    assert bars.equals(bars.sort("ts_event", "instrument_id"))
    assert bars["symbol"].unique().to_list() == [f"{symbol}.FUT"]
    tick = FUTURES[symbol].tick_size
    assert all(on_tick_grid(bars[c], tick) for c in ("open", "high", "low", "close"))
    assert bars.select(ordered_ohlc()).to_series().all()
    assert (bars["high"] > bars["low"]).mean() > 0.95


PRICE_LEVELS = [
    # symbol, from, to, statistic of the front close, low, high
    ("ZS", "2000-01-03", "2000-01-31", "median", 400, 520),
    ("ZL", "2000-01-03", "2000-01-31", "median", 13.5, 19),
    ("ZM", "2000-01-03", "2000-01-31", "median", 125, 185),
    ("CL", "2000-01-03", "2000-01-31", "median", 20, 31),
    ("HO", "2000-01-03", "2000-01-31", "median", 0.55, 0.90),
    ("ES", "2000-01-03", "2000-01-31", "median", 1300, 1600),
    ("ZS", "2008-01-01", "2008-12-31", "max", 1400, 1900),
    ("ZL", "2008-01-01", "2008-12-31", "max", 58, 85),
    ("CL", "2008-01-01", "2008-12-31", "max", 125, 165),
    ("ES", "2009-02-15", "2009-03-31", "min", 580, 800),
    ("ES", "2020-03-01", "2020-04-15", "min", 1950, 2550),
    ("ES", "2024-05-01", "2024-06-28", "median", 4800, 6200),
]


@pytest.mark.parametrize(("symbol", "start", "end", "statistic", "low", "high"), PRICE_LEVELS)
def test_front_prices_follow_market_history(sample, symbol, start, end, statistic, low, high):
    closes = between(front(daily(sample, symbol)), start, end)["close"]
    value = getattr(closes, statistic)()
    assert low <= value <= high, f"{symbol} {statistic} close {start}..{end} = {value}"


def volume_leader_changes(bars: pl.DataFrame) -> list[dt.date]:
    leaders = front(bars).sort("date")
    changed = leaders["instrument_id"] != leaders["instrument_id"].shift(1)
    return leaders.filter(changed)["date"].to_list()[1:]


@pytest.mark.parametrize(
    ("symbol", "months", "days", "per_year"),
    [
        # ES: eight days before the third Friday (15th-21st) of each quarterly month.
        ("ES", {3, 6, 9, 12}, range(5, 18), 4),
        # CL: about a week before expiry, three business days before the 25th of the prior month.
        ("CL", set(range(1, 13)), range(5, 22), 12),
        # Ags: days before first notice, at the end of the month before each delivery month.
        ("ZL", {12, 2, 4, 6, 7, 8, 9, 11}, range(18, 32), 8),
        ("ZS", {12, 2, 4, 6, 7, 8, 10}, range(18, 32), 7),
    ],
)
def test_volume_leader_rolls_about_a_week_before_expiry(sample, symbol, months, days, per_year):
    changes = volume_leader_changes(daily(sample, symbol))
    assert changes, "the volume leader never changed"
    wrong = [d for d in changes if d.month not in months or d.day not in days]
    assert not wrong, wrong
    in_2010 = [d for d in changes if d.year == 2010]
    assert len(in_2010) == per_year


def test_next_contract_is_priced_at_a_small_carry(sample):
    for symbol in DAILY_SYMBOLS:
        bars = daily(sample, symbol).filter(pl.col("close") > 0)
        spread = bars.group_by("date").agg(ratio=pl.col("close").max() / pl.col("close").min())
        assert spread["ratio"].quantile(0.99) < 1.25, symbol
    # ES carries the policy rate less the dividend yield: contango in 2007, backwardation in 2013.
    es = daily(sample, "ES").sort("date", "instrument_id")
    by_expiry = es.join(es.group_by("instrument_id").agg(last=pl.col("date").max()), on="instrument_id").sort(
        "date", "last"
    )
    ratio = by_expiry.group_by("date", maintain_order=True).agg(ratio=pl.col("close").last() / pl.col("close").first())
    assert between(ratio, "2007-01-01", "2007-06-30")["ratio"].mean() > 1.004
    assert between(ratio, "2013-01-01", "2013-12-31")["ratio"].mean() < 0.998


def test_mes_daily_bars_equal_es_and_start_at_the_listing(sample):
    mes, es = daily(sample, "MES"), daily(sample, "ES")
    assert mes["date"].min() == dt.date(2019, 5, 6)
    prices = ["open", "high", "low", "close"]
    es_since = es.filter(pl.col("date") >= dt.date(2019, 5, 6))
    both_contracts = [b.sort("date", "close").select(["date", *prices]) for b in (mes, es_since)]
    assert both_contracts[0].equals(both_contracts[1])
    assert front(mes).select(["date", *prices]).equals(front(es_since).select(["date", *prices]))
    assert (front(mes)["volume"] > 100_000).all()


def test_soybean_crush_identities_hold(sample):
    sessions = settlement_sessions(CONFIG.start, CONFIG.end)
    history = simulate_markets(CONFIG.seed, sessions)
    zs, zl, zm = history.spot["ZS"], history.spot["ZL"], history.spot["ZM"]
    oil_value, meal_value = OIL_LB_PER_BUSHEL_IN_DOLLARS * zl, MEAL_TONS_PER_BUSHEL * zm
    assert np.allclose(meal_value + oil_value - zs / 100, history.crush, atol=1e-9)
    assert np.allclose(oil_value / (oil_value + meal_value), history.oil_share, atol=1e-12)
    assert np.allclose(0.022 * zm + 0.11 * zl - zs / 100, history.crush, atol=1e-9)

    # What a consumer sees: crush and oil share from the front settlements in the files.
    closes = [front(daily(sample, s)).select("date", pl.col("close").alias(s)) for s in ("ZS", "ZL", "ZM")]
    board = (
        closes[0]
        .join(closes[1], on="date")
        .join(closes[2], on="date")
        .with_columns(
            crush=0.022 * pl.col("ZM") + 0.11 * pl.col("ZL") - pl.col("ZS") / 100,
            oil_share=0.11 * pl.col("ZL") / (0.11 * pl.col("ZL") + 0.022 * pl.col("ZM")),
        )
    )
    assert board["crush"].is_between(0.0, 3.5).mean() > 0.95
    assert board["crush"].is_between(0.5, 3.0).mean() > 0.75
    assert 0.28 <= between(board, "2000-01-01", "2001-12-31")["oil_share"].mean() <= 0.38
    assert 0.42 <= between(board, "2021-06-01", "2023-06-30")["oil_share"].mean() <= 0.52
    # Mean-reverting: the margin forgets a shock within months.
    crush = board["crush"].to_numpy()
    assert np.corrcoef(crush[:-250], crush[250:])[0, 1] < np.corrcoef(crush[:-1], crush[1:])[0, 1] - 0.3


def test_soybean_oil_moves_with_heating_oil_more_after_2012(sample):
    returns = {s: same_contract_returns(daily(sample, s)).rename({"ret": s}) for s in ("ZL", "HO", "CL")}
    joined = returns["ZL"].join(returns["HO"], on="date").join(returns["CL"], on="date")

    def corr(frame: pl.DataFrame, a: str, b: str) -> float:
        return float(np.corrcoef(frame[a].to_numpy(), frame[b].to_numpy())[0, 1])

    before, after = between(joined, "2000-01-01", "2010-12-31"), between(joined, "2013-01-01", "2024-06-28")
    assert corr(after, "ZL", "HO") > corr(before, "ZL", "HO") + 0.1
    assert corr(after, "ZL", "HO") > 0.3
    assert corr(joined, "HO", "CL") > 0.7


def test_volatility_clusters_and_crises_stand_out(sample):
    es = same_contract_returns(daily(sample, "ES")).sort("date")
    realized = es.with_columns(vol=pl.col("ret").rolling_std(21) * np.sqrt(252))
    calm = between(realized, "2017-01-01", "2017-12-31")["vol"].median()
    assert between(realized, "2008-10-01", "2008-10-31")["vol"].max() >= 2.5 * calm
    assert between(realized, "2020-03-01", "2020-03-31")["vol"].max() >= 2.5 * calm
    ret = es["ret"].to_numpy()
    squared = ret**2
    assert np.corrcoef(squared[:-1], squared[1:])[0, 1] > 0.1  # volatility clusters
    excess_kurtosis = np.mean((ret - ret.mean()) ** 4) / np.var(ret) ** 2 - 3
    assert excess_kurtosis > 2  # fat tails

    vix = fred(sample, "VIXCLS").drop_nulls()
    # VIX prices the volatility ES goes on to realize.
    tracked = vix.join(realized.drop_nulls(), on="date")
    assert np.corrcoef(tracked["value"].to_numpy(), tracked["vol"].to_numpy())[0, 1] > 0.7
    assert between(vix, "2008-10-01", "2008-11-30")["value"].max() > 40
    assert between(vix, "2020-03-01", "2020-03-31")["value"].max() > 40
    assert vix["value"].max() < 90
    assert vix["value"].min() >= 9
    assert between(vix, "2017-01-01", "2017-12-31")["value"].median() < 15


# --- MES intraday ------------------------------------------------------------------------------


def test_minute_bars_keep_globex_hours(sample):
    bars = with_trade_date(dbn(sample, "MES.v.0.ohlcv-1m"))
    local = bars["local"]
    minutes = local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute()
    assert not ((minutes >= 16 * 60) & (minutes < 17 * 60)).any()  # the daily halt
    assert not (local.dt.weekday() == 6).any()  # Saturday
    assert not ((local.dt.weekday() == 5) & (minutes >= 16 * 60)).any()  # Friday after the close
    assert not ((local.dt.weekday() == 7) & (minutes < 17 * 60)).any()  # Sunday before the open
    assert bars["trade_date"].unique().sort().to_list() == xnys_sessions(dt.date(2024, 6, 1), CONFIG.end)[-5:]
    per_session = bars.group_by("trade_date").len()["len"]
    assert per_session.max() <= 1_380 and per_session.min() >= 1_300
    assert bars.equals(bars.sort("ts_event"))
    assert on_tick_grid(bars["open"], 0.25) and on_tick_grid(bars["close"], 0.25)
    # Minutes without a trade are absent, and only in the dead of night.
    missing = 5 * 1_380 - bars.height
    assert missing > 0
    expected = pl.concat(
        [
            pl.datetime_range(
                dt.datetime.combine(d - dt.timedelta(days=1), dt.time(17)),
                dt.datetime.combine(d, dt.time(15, 59)),
                "1m",
                time_zone=CHICAGO,
                eager=True,
            )
            for d in bars["trade_date"].unique().sort().to_list()
        ]
    )
    gaps = expected.filter(~expected.is_in(local.implode()))
    assert len(gaps) == missing
    assert gaps.dt.hour().is_in([20, 21, 22, 23, 0, 1]).all()


def test_minute_bars_add_up_to_the_daily_front_bar(sample):
    bars = with_trade_date(dbn(sample, "MES.v.0.ohlcv-1m"))
    assert bars.select(ordered_ohlc()).to_series().all()
    sessions = (
        bars.group_by("trade_date")
        .agg(
            instrument_id=pl.col("instrument_id").unique(),
            open=pl.col("open").first(),
            high=pl.col("high").max(),
            low=pl.col("low").min(),
            close=pl.col("close").last(),
            volume=pl.col("volume").sum(),
        )
        .sort("trade_date")
    )
    assert sessions["instrument_id"].list.len().to_list() == [1] * 5
    expected = front(daily(sample, "MES")).filter(pl.col("date").is_in(sessions["trade_date"].implode())).sort("date")
    assert sessions["instrument_id"].list.first().to_list() == expected["instrument_id"].to_list()
    for column in ("open", "high", "low", "close", "volume"):
        assert sessions[column].to_list() == expected[column].to_list(), column
    assert (bars["volume"] >= 1).all()


def test_minute_volume_is_u_shaped_and_thin_overnight(sample):
    bars = with_trade_date(dbn(sample, "MES.v.0.ohlcv-1m"))
    clock = bars["local"].dt.hour().cast(pl.Int32) * 60 + bars["local"].dt.minute()
    bars = bars.with_columns(clock=clock)

    def mean_volume(start: int, end: int) -> float:
        return bars.filter(pl.col("clock").is_between(start, end - 1))["volume"].mean()

    opening, closing = mean_volume(8 * 60 + 30, 8 * 60 + 45), mean_volume(14 * 60 + 45, 15 * 60)
    midday, night = mean_volume(11 * 60, 13 * 60), mean_volume(20 * 60, 24 * 60)
    assert opening > 2 * midday
    assert closing > 1.5 * midday
    assert night < 0.3 * midday


def test_definitions_describe_the_listed_mes_contracts(sample):
    definitions = with_trade_date(dbn(sample, "MES.FUT.definition"))
    assert definitions.group_by("trade_date").len()["len"].to_list() == [2] * 5
    assert all(re.fullmatch(r"MES[HMUZ]\d", s) for s in definitions["raw_symbol"])
    for column, value in {
        "asset": "MES",
        "group": "ES",
        "exchange": "XCME",
        "security_type": "FUT",
        "instrument_class": "F",
        "currency": "USD",
        "unit_of_measure": "IPNT",
        "min_price_increment": 0.25,
        "unit_of_measure_qty": 5.0,
        "display_factor": 1.0,
        "min_price_increment_amount": 1.25,
    }.items():
        assert definitions[column].unique().to_list() == [value], column
    # Expiry at 08:30 Chicago on the third Friday of the contract month.
    expiry = definitions["expiration"].dt.convert_time_zone(CHICAGO)
    assert (expiry.dt.time() == dt.time(8, 30)).all()
    assert (expiry.dt.weekday() == 5).all() and expiry.dt.day().is_between(15, 21).all()
    assert (definitions["activation"] < definitions["ts_event"]).all()
    assert (definitions["ts_event"] < definitions["expiration"]).all()
    assert (definitions["low_limit_price"] < definitions["high_limit_price"]).all()
    bars = with_trade_date(dbn(sample, "MES.v.0.ohlcv-1m"))
    fronts = bars.select("trade_date", "instrument_id").unique()
    assert fronts.join(definitions, on=["trade_date", "instrument_id"], how="anti").is_empty()


# --- MES ticks ---------------------------------------------------------------------------------


def tick_session_bars(folder: Path) -> pl.DataFrame:
    bars = with_trade_date(dbn(folder, "MES.v.0.ohlcv-1m"))
    return bars.filter(pl.col("trade_date") == CONFIG.end)


def test_trades_rebuild_their_minute_bars(sample):
    trades = with_trade_date(dbn(sample, "MES.v.0.trades"))
    assert trades["trade_date"].unique().to_list() == [CONFIG.end]
    assert 0.9 * CONFIG.trades_per_session <= trades.height <= 1.1 * CONFIG.trades_per_session
    by_minute = trades.group_by(pl.col("ts_event").dt.truncate("1m").alias("ts_event"), maintain_order=True).agg(
        open=pl.col("price").first(),
        high=pl.col("price").max(),
        low=pl.col("price").min(),
        close=pl.col("price").last(),
        volume=pl.col("size").sum().cast(pl.UInt64),
        instrument_id=pl.col("instrument_id").first(),
    )
    bars = tick_session_bars(sample).select(by_minute.columns)
    assert by_minute.sort("ts_event").equals(bars.sort("ts_event"))
    assert on_tick_grid(trades["price"], 0.25)
    assert (trades["ts_event"].diff().drop_nulls() > dt.timedelta(0)).all()
    assert (trades["ts_recv"].diff().drop_nulls() > dt.timedelta(0)).all()  # Databento's receive order
    assert (trades["sequence"].diff().drop_nulls() > 0).all()
    assert (trades["ts_recv"] > trades["ts_event"]).all()
    assert inside_sessions(trades)
    assert (trades["ts_in_delta"] > 0).all()
    assert set(trades["side"]) == {"A", "B"} and set(trades["action"]) == {"T"}
    # Aggressors follow the move: upticks are bought, downticks sold.
    move = trades["price"].diff()
    assert (trades.filter(move > 0)["side"] == "B").mean() > 0.85
    assert (trades.filter(move < 0)["side"] == "A").mean() > 0.85


def test_tbbo_quotes_the_touch_before_each_trade(sample):
    trades, tbbo = dbn(sample, "MES.v.0.trades"), dbn(sample, "MES.v.0.tbbo")
    assert tbbo.select(trades.columns).equals(trades)
    spread = tbbo["ask_px_00"] - tbbo["bid_px_00"]
    assert (spread > 0).all() and (spread <= 0.5).all()
    assert (spread == 0.25).mean() > 0.85
    bought = tbbo["side"] == "B"
    assert (tbbo.filter(bought)["price"] == tbbo.filter(bought)["ask_px_00"]).all()
    assert (tbbo.filter(~bought)["price"] == tbbo.filter(~bought)["bid_px_00"]).all()
    assert ((tbbo["bid_sz_00"] > 0) & (tbbo["bid_ct_00"] > 0) & (tbbo["bid_ct_00"] <= tbbo["bid_sz_00"])).all()


def test_mbp10_book_levels_are_ordered_and_deeper_away_from_the_touch(sample):
    book = with_trade_date(dbn(sample, "MES.v.0.mbp-10"))
    assert book["trade_date"].unique().to_list() == [CONFIG.end]
    for j in range(1, 10):
        assert (book[f"bid_px_{j - 1:02d}"] - book[f"bid_px_{j:02d}"] == 0.25).all()
        assert (book[f"ask_px_{j:02d}"] - book[f"ask_px_{j - 1:02d}"] == 0.25).all()
    assert (book["bid_px_00"] < book["ask_px_00"]).all()
    assert book["bid_sz_09"].mean() > 2 * book["bid_sz_00"].mean()
    assert book["ask_sz_09"].mean() > 2 * book["ask_sz_00"].mean()
    assert set(book["action"]) == {"A", "C", "M", "T"} and set(book["side"]) == {"A", "B"}
    assert (book["ts_event"].diff().drop_nulls() > dt.timedelta(0)).all()
    assert (book["ts_recv"].diff().drop_nulls() > dt.timedelta(0)).all()
    assert (book["sequence"].diff().drop_nulls() > 0).all()
    assert inside_sessions(book)
    # The trades inside the book stream are the trades file.
    trades = dbn(sample, "MES.v.0.trades")
    in_book = book.filter(pl.col("action") == "T").select(trades.columns)
    assert in_book.equals(trades.with_columns(flags=pl.lit(128, pl.UInt8)))
    # Each update names a level of the book it leaves behind.
    quotes = book.filter(pl.col("action") != "T")
    level_price = pl.concat_list(
        [
            pl.when(pl.col("side") == "B").then(pl.col(f"bid_px_{j:02d}")).otherwise(pl.col(f"ask_px_{j:02d}"))
            for j in range(10)
        ]
    ).list.get(pl.col("depth").cast(pl.Int64))
    assert (quotes["price"] == quotes.select(level_price).to_series()).all()
    assert quotes.height > book.filter(pl.col("action") == "T").height


def test_order_book_and_flow_lean_toward_the_next_minutes(sample):
    book = dbn(sample, "MES.v.0.mbp-10").with_columns(
        minute=pl.col("ts_event").dt.truncate("1m"),
        imbalance=(pl.col("bid_sz_00").cast(pl.Float64) - pl.col("ask_sz_00"))
        / (pl.col("bid_sz_00") + pl.col("ask_sz_00")),
        signed=pl.when(pl.col("side") == "B").then(1).otherwise(-1) * pl.col("size").cast(pl.Int64),
    )
    per_minute = book.group_by("minute").agg(
        imbalance=pl.col("imbalance").mean(),
        flow=pl.col("signed").filter(pl.col("action") == "T").sum()
        / pl.col("size").filter(pl.col("action") == "T").sum(),
    )
    bars = (
        tick_session_bars(sample)
        .sort("ts_event")
        .with_columns(
            ahead=pl.col("close").shift(-5) - pl.col("close"),
        )
    )
    joined = bars.join(per_minute, left_on="ts_event", right_on="minute").drop_nulls("ahead")
    ahead = joined["ahead"].to_numpy()
    shuffle = np.random.default_rng(0).permutation
    for feature, least in (("imbalance", 0.1), ("flow", 0.05)):
        values = joined[feature].to_numpy()
        information = np.corrcoef(values, ahead)[0, 1]
        assert information > least, feature
        # Shuffled across minutes it carries nothing: the lean is real, not an artefact of the test. (Averaged
        # over shuffles: one shuffle of a few hundred minutes correlates by chance up to about 0.1.)
        shuffled = np.mean([abs(np.corrcoef(shuffle(values), ahead)[0, 1]) for _ in range(20)])
        assert shuffled < information / 2, feature
    # A little information, not a giveaway.
    assert np.corrcoef(joined["imbalance"].to_numpy(), ahead)[0, 1] < 0.5


# --- FRED and Yahoo ------------------------------------------------------------------------------


def test_fred_series_keep_their_calendars(sample):
    sessions = set(xnys_sessions(CONFIG.start, CONFIG.end))
    for series_id, series in FRED_SERIES.items():
        frame = fred(sample, series_id)
        assert frame.columns == ["date", "value"]
        days = frame["date"].to_list()
        assert days == sorted(days) and days[-1] <= CONFIG.end
        if series_id == "DFF":
            assert days == [dt.date(2000, 1, 1) + dt.timedelta(days=i) for i in range(len(days))]
            assert days[-1] == CONFIG.end and frame["value"].null_count() == 0
        elif series.frequency == "monthly":
            assert all(d.day == 1 for d in days) and days[0] == dt.date(2000, 1, 1)
            assert len(days) == 12 * 24 + 6 and frame["value"].null_count() == 0
        else:
            first = series.start if series.start > dt.date(2000, 1, 3) else dt.date(2000, 1, 3)
            assert days[0] == first, series_id
            weekdays = [first + dt.timedelta(days=i) for i in range((CONFIG.end - first).days + 1)]
            assert days == [d for d in weekdays if d.weekday() < 5], series_id
            missing = set(frame.filter(pl.col("value").is_null())["date"])
            assert missing == {d for d in days if d not in sessions}, series_id


FRED_LEVELS = [
    # series, from, to, statistic, low, high
    ("DFF", "2000-06-01", "2000-12-31", "median", 6.3, 6.7),
    ("DFF", "2003-07-01", "2004-05-31", "median", 0.9, 1.1),
    ("DFF", "2006-08-01", "2007-07-31", "median", 5.1, 5.4),
    ("DFF", "2009-06-01", "2015-06-30", "max", 0.0, 0.3),
    ("DFF", "2019-01-01", "2019-06-30", "median", 2.3, 2.5),
    ("DFF", "2020-04-01", "2021-12-31", "max", 0.0, 0.2),
    ("DFF", "2023-09-01", "2024-06-28", "median", 5.25, 5.4),
    ("DGS10", "2000-01-03", "2000-03-31", "median", 5.8, 7.2),
    ("DGS10", "2020-04-01", "2020-12-31", "median", 0.4, 1.3),
    ("DGS2", "2011-01-01", "2014-12-31", "median", 0.1, 0.6),
    ("T10Y2Y", "2010-01-01", "2013-12-31", "median", 1.4, 3.2),
    ("T10Y2Y", "2023-01-01", "2023-12-31", "median", -1.4, -0.2),
    ("T10YIE", "2004-01-01", "2007-12-31", "median", 2.0, 2.8),
    ("T10YIE", "2008-10-15", "2009-01-31", "min", 0.0, 0.5),
    ("T10YIE", "2020-03-01", "2020-04-30", "min", 0.0, 1.0),
    ("BAMLH0A0HYM2", "2004-01-01", "2007-06-30", "median", 2.2, 5.0),
    ("BAMLH0A0HYM2", "2008-10-01", "2009-03-31", "max", 16.0, 26.0),
    ("BAMLH0A0HYM2", "2020-03-01", "2020-04-30", "max", 8.5, 14.0),
    ("DEXCHUS", "2000-01-03", "2005-07-20", "min", 8.27, 8.29),
    ("DEXCHUS", "2000-01-03", "2005-07-20", "max", 8.27, 8.29),
    ("DEXCHUS", "2008-08-01", "2008-12-31", "median", 6.6, 7.0),
    ("DEXCHUS", "2011-01-01", "2024-06-28", "min", 5.9, 6.4),
    ("DEXCHUS", "2011-01-01", "2024-06-28", "max", 7.0, 7.5),
    ("DEXUSEU", "2000-01-03", "2000-01-31", "median", 0.95, 1.08),
    ("DEXUSEU", "2001-01-01", "2001-12-31", "median", 0.8, 0.95),
    ("DEXUSEU", "2008-01-01", "2008-08-31", "max", 1.45, 1.7),
    ("DEXUSEU", "2015-01-01", "2024-06-28", "median", 1.03, 1.22),
    ("DEXJPUS", "2000-01-03", "2007-12-31", "median", 100, 125),
    ("DEXJPUS", "2011-01-01", "2012-06-30", "min", 70, 82),
    ("DTWEXBGS", "2006-01-02", "2006-01-31", "median", 95, 106),
    ("DTWEXBGS", "2022-01-01", "2022-12-31", "max", 120, 136),
    ("CPIAUCSL", "2000-01-01", "2000-01-01", "max", 169.3, 169.3),
    ("CPIAUCSL", "2024-01-01", "2024-01-01", "max", 303, 316),
]


@pytest.mark.parametrize(("series_id", "start", "end", "statistic", "low", "high"), FRED_LEVELS)
def test_fred_levels_follow_history(sample, series_id, start, end, statistic, low, high):
    values = between(fred(sample, series_id).drop_nulls(), start, end)["value"]
    value = getattr(values, statistic)()
    assert low <= value <= high, f"{series_id} {statistic} {start}..{end} = {value}"


def test_treasury_spread_and_inflation_are_consistent(sample):
    curve = (
        fred(sample, "DGS10")
        .join(fred(sample, "DGS2"), on="date", suffix="_2")
        .join(fred(sample, "T10Y2Y"), on="date", suffix="_spread")
        .drop_nulls()
    )
    assert (curve["value_spread"] == (curve["value"] - curve["value_2"]).round(2)).all()
    cpi = fred(sample, "CPIAUCSL").with_columns(yoy=pl.col("value") / pl.col("value").shift(12) - 1)
    assert 0.075 <= between(cpi, "2022-03-01", "2022-09-01")["yoy"].max() <= 0.10
    assert 0.018 <= between(cpi, "2001-01-01", "2019-12-01")["yoy"].mean() <= 0.03


def test_wti_spot_tracks_the_nearest_crude_contract(sample):
    cl = daily(sample, "CL")
    nearest = (
        cl.join(cl.group_by("instrument_id").agg(last=pl.col("date").max()), on="instrument_id")
        .sort("date", "last")
        .unique("date", keep="first", maintain_order=True)
    )
    spot = fred(sample, "DCOILWTICO").drop_nulls().join(nearest, on="date")
    assert ((spot["value"] - spot["close"]).abs() / spot["close"].abs()).median() < 0.01
    assert between(spot, "2020-04-15", "2020-04-30")["value"].min() < 0  # the negative print


def test_yahoo_tickers_keep_their_calendars_and_links(sample):
    sessions = xnys_sessions(CONFIG.start, CONFIG.end)
    for ticker in YAHOO_TICKERS:
        bars = yahoo(sample, ticker)
        assert bars.columns == ["date", "open", "high", "low", "close", "adj_close", "volume"]
        if ticker.endswith("=X"):
            every_day = [CONFIG.start + dt.timedelta(days=i) for i in range((CONFIG.end - CONFIG.start).days + 1)]
            assert bars["date"].to_list() == [d for d in every_day if d.weekday() < 5], ticker
        else:
            assert bars["date"].to_list() == sessions, ticker
        assert bars.select(ordered_ohlc()).to_series().all(), ticker
        assert (bars["adj_close"] == bars["close"]).all()
    zl = yahoo(sample, "ZL=F").join(front(daily(sample, "ZL")), on="date", suffix="_dbn")
    assert zl.height == len(sessions) and ((zl["close"] - zl["close_dbn"]).abs() < 1e-9).all()
    assert (zl["volume"] == zl["volume_dbn"].cast(pl.Int64)).all()
    vix = yahoo(sample, "^VIX").join(fred(sample, "VIXCLS"), on="date")
    assert (vix["close"] == vix["value"]).all()


YAHOO_LEVELS = [
    ("DX-Y.NYB", "2000-01-03", "2000-01-31", "median", 95, 105),
    ("DX-Y.NYB", "2008-01-01", "2008-06-30", "min", 68, 77),
    ("DX-Y.NYB", "2022-01-01", "2022-12-31", "max", 108, 120),
    ("BRL=X", "2000-01-03", "2000-01-31", "median", 1.7, 1.9),
    ("BRL=X", "2002-06-01", "2002-12-31", "max", 3.3, 4.5),
    ("BRL=X", "2011-01-01", "2011-12-31", "median", 1.45, 1.8),
    ("BRL=X", "2015-08-01", "2015-12-31", "max", 3.6, 4.6),
    ("BRL=X", "2021-01-01", "2024-06-28", "median", 4.8, 5.8),
    ("MYR=X", "2000-01-03", "2005-07-20", "min", 3.798, 3.802),
    ("MYR=X", "2000-01-03", "2005-07-20", "max", 3.798, 3.802),
    ("MYR=X", "2011-01-01", "2011-12-31", "min", 2.8, 3.15),
    ("MYR=X", "2016-01-01", "2016-12-31", "max", 4.2, 4.7),
    ("MYR=X", "2024-01-01", "2024-06-28", "median", 4.4, 5.0),
]


@pytest.mark.parametrize(("ticker", "start", "end", "statistic", "low", "high"), YAHOO_LEVELS)
def test_yahoo_levels_follow_history(sample, ticker, start, end, statistic, low, high):
    value = getattr(between(yahoo(sample, ticker), start, end)["close"], statistic)()
    assert low <= value <= high, f"{ticker} {statistic} {start}..{end} = {value}"


# --- Determinism and prefix stability ------------------------------------------------------------


def test_the_same_config_writes_byte_identical_files(sample, tmp_path_factory):
    again = build_sample(CONFIG, tmp_path_factory.mktemp("again") / "sample")
    assert all_files(again) == all_files(sample)
    for path in all_files(sample):
        assert (again / path).read_bytes() == (sample / path).read_bytes(), path


def test_another_seed_writes_another_history(sample, tmp_path_factory):
    other = build_sample(
        dataclasses.replace(CONFIG, seed=7, end=dt.date(2001, 1, 31)), tmp_path_factory.mktemp("seed") / "sample"
    )
    theirs = front(daily(other, "ES"))
    ours = front(daily(sample, "ES")).filter(pl.col("date") <= dt.date(2001, 1, 31))
    assert theirs["date"].to_list() == ours["date"].to_list()
    assert (theirs["close"] != ours["close"]).mean() > 0.9


def test_a_later_end_keeps_every_earlier_record(sample, later_sample):
    last = CONFIG.end
    for symbol in DAILY_SYMBOLS:
        earlier = daily(sample, symbol)
        assert daily(later_sample, symbol).filter(pl.col("date") <= last).equals(earlier), symbol
        assert daily(later_sample, symbol)["date"].max() == LATER.end
    for series_id in FRED_SERIES:
        earlier = fred(sample, series_id)
        assert fred(later_sample, series_id).filter(pl.col("date") <= last).equals(earlier), series_id
    for ticker in YAHOO_TICKERS:
        earlier = yahoo(sample, ticker)
        assert yahoo(later_sample, ticker).filter(pl.col("date") <= last).equals(earlier), ticker


def test_a_session_is_the_same_whichever_window_holds_it(sample, later_sample):
    shared = [dt.date(2024, 6, 25), dt.date(2024, 6, 26), dt.date(2024, 6, 27), dt.date(2024, 6, 28)]
    for name in ("MES.v.0.ohlcv-1m", "MES.FUT.definition"):
        earlier = with_trade_date(dbn(sample, name)).filter(pl.col("trade_date").is_in(shared))
        later = with_trade_date(dbn(later_sample, name))
        assert set(later["trade_date"]) == {*shared, LATER.end}, name
        assert later.filter(pl.col("trade_date").is_in(shared)).equals(earlier), name
    for name in ("MES.v.0.trades", "MES.v.0.tbbo", "MES.v.0.mbp-10"):
        earlier = with_trade_date(dbn(sample, name))
        later = with_trade_date(dbn(later_sample, name))
        assert set(later["trade_date"]) == {CONFIG.end, LATER.end}, name
        assert later.filter(pl.col("trade_date") == CONFIG.end).equals(earlier), name
