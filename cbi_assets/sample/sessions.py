"""Calendars of the sample: NYSE settlement sessions, weekdays, and CME Globex session minutes."""

from __future__ import annotations

import datetime as dt

import numpy as np

from cbi_assets.calendars import CHICAGO, settlement_sessions
from cbi_assets.catalogue import GLOBEX_CLOSE, GLOBEX_OPEN, RTH_CLOSE, RTH_OPEN

NS_PER_MINUTE = 60_000_000_000
NS_PER_DAY = 86_400_000_000_000

# A Globex session runs from 17:00 the evening before its trade date to 16:00 on it.
SESSION_MINUTES = (24 * 60) - (GLOBEX_OPEN.hour - GLOBEX_CLOSE.hour) * 60  # 1,380


def _minutes_after_open(t: dt.time) -> int:
    """Minutes from the 17:00 Globex open to a Chicago wall-clock time on the trade date."""
    return (24 - GLOBEX_OPEN.hour) * 60 + t.hour * 60 + t.minute


RTH_OPEN_MINUTE = _minutes_after_open(RTH_OPEN)  # 930: 08:30 Chicago
RTH_CLOSE_MINUTE = _minutes_after_open(RTH_CLOSE)  # 1,320: 15:00 Chicago

# Contracts keep expiring after the last generated day; their expiries need sessions that far out.
_CALENDAR_MARGIN = dt.timedelta(days=800)


def business_days(start: dt.date, end: dt.date) -> np.ndarray:
    """Sessions from `start` to well past `end`: contract expiries and rolls are counted on them."""
    return settlement_sessions(start, end + _CALENDAR_MARGIN)


def last_session(day: dt.date) -> dt.date:
    """The last XNYS session on or before `day` (the sample's end when `day` is a holiday)."""
    sessions = settlement_sessions(day - dt.timedelta(days=14), day)
    if len(sessions) == 0:
        raise ValueError(f"no XNYS session in the two weeks up to {day}; pick a later end date")
    return sessions[-1].astype(dt.date)


def weekdays(start: dt.date, end: dt.date) -> np.ndarray:
    """Monday-to-Friday days from `start` to `end` inclusive, as datetime64[D]."""
    days = np.arange(np.datetime64(start), np.datetime64(end) + 1, dtype="datetime64[D]")
    return days[np.is_busday(days)]


def globex_open_ns(trade_dates: np.ndarray) -> np.ndarray:
    """UTC nanoseconds of each session's 17:00 Chicago open on the evening before its trade date.

    Daylight saving changes at 02:00 on a Sunday, before any session opens, so every session is
    exactly 1,380 minutes long; zoneinfo gives the right UTC offset on each side of the change.
    """
    out = np.empty(len(trade_dates), dtype=np.int64)
    for i, day in enumerate(trade_dates.astype(dt.date)):
        opening = dt.datetime.combine(day - dt.timedelta(days=1), GLOBEX_OPEN, tzinfo=CHICAGO)
        out[i] = int(opening.timestamp()) * 1_000_000_000
    return out


def chicago_ns(day: dt.date, at: dt.time) -> int:
    """UTC nanoseconds of a Chicago wall-clock time."""
    return int(dt.datetime.combine(day, at, tzinfo=CHICAGO).timestamp()) * 1_000_000_000


def midnight_ns(days: np.ndarray) -> np.ndarray:
    """00:00 UTC of each day in nanoseconds: the ts_event of a daily bar."""
    return days.astype("datetime64[D]").astype(np.int64) * NS_PER_DAY
