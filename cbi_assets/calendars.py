"""Trading calendars: which days a dataset should have, and the trade date of an intraday record."""

from __future__ import annotations

import datetime as dt
import warnings
from functools import lru_cache
from zoneinfo import ZoneInfo

import exchange_calendars as xcals
import numpy as np
import polars as pl

from cbi_assets.catalogue import (
    EXCHANGE_TIMEZONE,
    GLOBEX_CLOSE,
    GLOBEX_EARLY_CLOSE_CALENDARS,
    GLOBEX_OPEN,
    SETTLEMENT_CALENDAR,
)

CHICAGO = ZoneInfo(EXCHANGE_TIMEZONE)
# A Globex session opens at 17:00 Chicago the evening before its trade date; shifting by
# the 7 hours to midnight maps every record onto the trade date it settles with.
_SESSION_SHIFT = dt.timedelta(hours=24) - (
    dt.datetime.combine(dt.date.min, GLOBEX_OPEN) - dt.datetime.combine(dt.date.min, dt.time(0))
)


def _calendar(name: str) -> xcals.ExchangeCalendar:
    # From well before the lake's history to a few years ahead: contracts expire after today.
    first, last = dt.date(1990, 1, 2), dt.date.today() + dt.timedelta(days=3 * 366)
    with warnings.catch_warnings():
        # exchange_calendars trips a pandas 3.1 deprecation inside itself; nothing to act on here.
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
        return xcals.get_calendar(name, start=first.isoformat(), end=last.isoformat())


@lru_cache(maxsize=1)
def _settlement_sessions() -> np.ndarray:
    return _calendar(SETTLEMENT_CALENDAR).sessions.values.astype("datetime64[D]")


@lru_cache(maxsize=1)
def _early_closes() -> dict[dt.date, dt.datetime]:
    earliest: dict[dt.date, dt.datetime] = {}
    for name in GLOBEX_EARLY_CLOSE_CALENDARS:
        calendar = _calendar(name)
        for day, close in calendar.schedule.loc[calendar.early_closes, "close"].items():
            close = close.to_pydatetime().astimezone(dt.UTC)
            earliest[day.date()] = min(close, earliest.get(day.date(), close))
    return earliest


def settlement_sessions(start: dt.date, end: dt.date) -> np.ndarray:
    """Exchange sessions with a daily settlement in [start, end], as datetime64[D]."""
    sessions = _settlement_sessions()
    return sessions[(sessions >= np.datetime64(start)) & (sessions <= np.datetime64(end))]


def settlement_days(start: dt.date, end: dt.date) -> list[dt.date]:
    """Exchange sessions with a daily settlement in [start, end]."""
    return settlement_sessions(start, end).astype(dt.date).tolist()


def is_settlement_day(day: dt.date) -> bool:
    return bool(settlement_days(day, day))


def expected_days(calendar: str, start: dt.date, end: dt.date) -> list[dt.date]:
    """The days in [start, end] on which a dataset on `calendar` should have records."""
    if end < start:
        return []
    if calendar in ("settlement", "globex"):
        return settlement_days(start, end)
    every_day = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    if calendar == "weekdays":
        return [d for d in every_day if d.weekday() < 5]
    if calendar == "all_days":
        return every_day
    if calendar == "month_starts":
        return [d for d in every_day if d.day == 1]
    raise ValueError(f"unknown calendar {calendar!r}")


def trade_date(ts: pl.Expr) -> pl.Expr:
    """The CME trade date of a UTC timestamp in a Globex session."""
    return (ts.dt.convert_time_zone(EXCHANGE_TIMEZONE).dt.replace_time_zone(None) + _SESSION_SHIFT).dt.date()


def globex_session(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """UTC open and close of the Globex session whose trade date is `day`.

    It opens at 17:00 Chicago on the calendar day before (Sunday evening for a Monday).
    """
    opens = dt.datetime.combine(day - dt.timedelta(days=1), GLOBEX_OPEN, CHICAGO)
    closes = dt.datetime.combine(day, GLOBEX_CLOSE, CHICAGO)
    return opens.astimezone(dt.UTC), closes.astimezone(dt.UTC)


def trading_ends(day: dt.date) -> dt.datetime:
    """UTC time the session of trade date `day` stops trading: its close, or a half day's early halt. (The
    session's bounds stay `globex_session`'s; this says only when bars stop coming.)"""
    return _early_closes().get(day, globex_session(day)[1])
