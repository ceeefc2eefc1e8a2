"""The embedded sample source: realistic, seeded, offline market data in the local-files layout.

`build_sample(SampleConfig(end=...), folder)` writes Databento DBN files for the futures, FRED and
Yahoo CSVs, and a completion marker. The same config always gives byte-identical files, and a
later `end` leaves every record on earlier dates unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import pathlib
from dataclasses import dataclass

import polars as pl

from cbi_assets.catalogue import FUTURES
from cbi_assets.sample import writer
from cbi_assets.sample.definitions import mes_definitions
from cbi_assets.sample.intraday import minute_bars
from cbi_assets.sample.macro import (
    FRED_DECIMALS,
    YAHOO_DECIMALS,
    fred_observations,
    yahoo_bars,
)
from cbi_assets.sample.markets import front_bars, futures_bars, simulate_markets
from cbi_assets.sample.sessions import business_days, last_session, settlement_sessions
from cbi_assets.sample.ticks import tick_records

__all__ = ["MARKER", "SampleConfig", "build_sample"]

MARKER = "SAMPLE_COMPLETE"


@dataclass(frozen=True)
class SampleConfig:
    """What the sample holds: daily history from `start` to `end`, and MES detail at the end."""

    end: dt.date  # last trade date generated (inclusive); if not an XNYS session, the last session before it
    seed: int = 20_240_601
    start: dt.date = dt.date(2000, 1, 3)
    # MES 1-minute bars and definitions for the last N sessions (>= 1). Sessions before MES listed
    # in May 2019 (long benchmark windows) take their prices from the ES front contract.
    intraday_sessions: int = 60
    tick_sessions: int = 2  # MES trades, TBBO and MBP-10 for the last N sessions (<= intraday_sessions)
    # Scale of tick data per session (approximate). Every traded minute needs two to four trades
    # to visit its open, high, low and close, so a session never has fewer than about 4,500.
    trades_per_session: int = 20_000

    def __post_init__(self) -> None:
        if self.start >= self.end:
            raise ValueError(f"SampleConfig: start {self.start} must be before end {self.end}")
        if self.intraday_sessions < 1:
            raise ValueError(f"SampleConfig: intraday_sessions must be at least 1, got {self.intraday_sessions}")
        if not 0 <= self.tick_sessions <= self.intraday_sessions:
            raise ValueError(
                f"SampleConfig: tick_sessions ({self.tick_sessions}) must be between 0 and "
                f"intraday_sessions ({self.intraday_sessions}); tick data lives inside the 1-minute bars"
            )
        if self.trades_per_session < 1:
            raise ValueError(f"SampleConfig: trades_per_session must be positive, got {self.trades_per_session}")

    def to_json(self) -> str:
        fields = {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in dataclasses.asdict(self).items()}
        return json.dumps(fields, indent=2, sort_keys=True) + "\n"


def build_sample(config: SampleConfig, folder: pathlib.Path) -> pathlib.Path:
    """Write the sample into `folder` (created; written atomically: build in a sibling temp dir,
    then rename; if `folder` already exists with a complete marker file, return it untouched).
    Returns folder."""
    folder = pathlib.Path(folder)
    if (folder / MARKER).is_file():
        return folder
    with writer.atomic_folder(folder, MARKER) as staging:
        _write_sample(config, staging)
        (staging / MARKER).write_text(config.to_json())
    return folder


def _write_sample(config: SampleConfig, folder: pathlib.Path) -> None:
    end = last_session(config.end)
    sessions = settlement_sessions(config.start, end)
    if len(sessions) < config.intraday_sessions:
        raise ValueError(
            f"SampleConfig: intraday_sessions ({config.intraday_sessions}) exceeds the "
            f"{len(sessions)} sessions from {config.start} to {end}"
        )
    history = simulate_markets(config.seed, sessions)
    expiry_days = business_days(config.start, end)
    bars = {symbol: futures_bars(history, symbol, config.seed, expiry_days) for symbol in FUTURES}
    for symbol, future in FUTURES.items():
        # A sample that ends before MES listed holds an MES file without records.
        first = max(future.listed, config.start)
        writer.write_daily_bars(folder, future, bars[symbol].filter(pl.col("date") >= first), first, end)

    mes = FUTURES["MES"]
    window = sessions[-config.intraday_sessions :].astype("datetime64[D]").tolist()
    listed = bars["MES"].filter(pl.col("date").is_in(window))
    front = front_bars(listed)
    minutes = minute_bars(front, config.seed)
    writer.write_minute_bars(folder, mes, minutes, front)
    writer.write_definitions(folder, mes, mes_definitions(bars["MES"], window), listed)

    tick_days = window[len(window) - config.tick_sessions :] if config.tick_sessions else []
    ticks = tick_records(
        minutes.filter(pl.col("trade_date").is_in(tick_days)),
        config.trades_per_session,
        config.seed,
        writer.tick_fixed(mes.tick_size),
    )
    tick_front = front.filter(pl.col("date").is_in(tick_days))
    writer.write_ticks(folder, mes, ticks, tick_front)

    wti_nearest = bars["CL"].filter(pl.col("rank") == 0)["close"].to_numpy() * FUTURES["CL"].tick_size
    for series_id, frame in fred_observations(history, wti_nearest, config.seed, config.start, end).items():
        decimals = FRED_DECIMALS[series_id]
        frame = frame.with_columns(pl.col("value").round(decimals))
        writer.write_csv(folder / "fred" / f"{series_id}.csv", frame, decimals)
    for ticker, frame in yahoo_bars(history, front_bars(bars["ZL"]), config.seed, config.start, end).items():
        writer.write_csv(folder / "yahoo" / f"{ticker}.csv", frame, YAHOO_DECIMALS[ticker])
