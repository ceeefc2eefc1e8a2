"""MES layer: the equity calendar (expiries, rolls, index rebalancing, month and quarter ends)
and the intraday session (Globex, regular hours, opening range, lunch, last hour)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from cbi_assets.calendars import settlement_sessions
from cbi_assets.catalogue import RTH_CLOSE, RTH_OPEN
from cbi_assets.features.spec import FeatureSet

QUARTER_MONTHS = (3, 6, 9, 12)
ROLL_DAYS_BEFORE_EXPIRY = 8  # CME rolls E-mini positions about 8 days before the expiry


def quarterly_expiries(first: dt.date, last: dt.date) -> list[dt.date]:
    """Third Fridays of Mar, Jun, Sep and Dec: E-mini expiry and S&P index rebalancing."""
    out = []
    for year in range(first.year, last.year + 2):
        for month in QUARTER_MONTHS:
            day = dt.date(year, month, 15)
            out.append(day + dt.timedelta(days=(4 - day.weekday()) % 7))
    return out


def calendar_table(dates: pl.Series) -> pl.DataFrame:
    """Per trade date: sessions to the next quarterly expiry, roll window, month and quarter ends.

    All of it is known in advance from the exchange calendar.
    """
    days = dates.to_numpy().astype("datetime64[D]")
    first, last = days.min().astype(dt.date), days.max().astype(dt.date)
    sessions = settlement_sessions(first - dt.timedelta(days=10), last + dt.timedelta(days=400))
    expiries = np.array(quarterly_expiries(first, last), dtype="datetime64[D]")
    next_expiry = expiries[np.searchsorted(expiries, days, side="left")]
    position = np.searchsorted(sessions, days, side="left")
    sessions_to_expiry = np.searchsorted(sessions, next_expiry, side="left") - position
    months = days.astype("datetime64[M]")
    next_session = sessions[np.minimum(position + 1, len(sessions) - 1)]
    previous_session = sessions[np.maximum(position - 1, 0)]
    month_end = next_session.astype("datetime64[M]") != months
    month_start = previous_session.astype("datetime64[M]") != months
    month_last_session = sessions[np.searchsorted(sessions, (months + 1).astype("datetime64[D]"), side="left") - 1]
    calendar_days_to_expiry = (next_expiry - days).astype(int)
    return pl.DataFrame(
        {
            "date": dates,
            "sessions_to_expiry": sessions_to_expiry,
            "in_roll_window": (calendar_days_to_expiry <= ROLL_DAYS_BEFORE_EXPIRY).astype(np.int8),
            "is_expiry_rebalance_day": (calendar_days_to_expiry == 0).astype(np.int8),
            "is_month_end": month_end.astype(np.int8),
            "is_quarter_end": (month_end & np.isin(months.astype(int) % 12 + 1, QUARTER_MONTHS)).astype(np.int8),
            "is_month_start": month_start.astype(np.int8),
            "sessions_to_month_end": np.searchsorted(sessions, month_last_session, side="left") - position,
            "day_of_week": (days.astype("datetime64[D]").view("int64") - 4) % 7,  # 0 Monday
        }
    )


CALENDAR_TEXT = {
    "sessions_to_expiry": "sessions to the next quarterly E-mini expiry (third Friday of Mar/Jun/Sep/Dec)",
    "in_roll_window": "1 within 8 days before the quarterly expiry, when positions roll",
    "is_expiry_rebalance_day": "1 on the quarterly expiry, which is also the S&P 500 rebalancing day",
    "is_month_end": "1 on the last session of a month",
    "is_quarter_end": "1 on the last session of a quarter",
    "is_month_start": "1 on the first session of a month",
    "sessions_to_month_end": "sessions left to the last session of the month",
    "day_of_week": "day of the week (0 Monday)",
}


def calendar_features(fs: FeatureSet) -> None:
    for name, text in CALENDAR_TEXT.items():
        fs.add(name, pl.col(name), text, source="exchange calendar", lag="known in advance")


GLOBEX_OPEN_MINUTE = 17 * 60  # of the Chicago clock


def session_features(fs: FeatureSet, bar_minutes: int) -> None:
    """On an intraday table with `session_minute` (minutes from the 17:00 Globex open to the
    bar's open), `trade_date` and OHLC.

    The opening range needs bars that fit inside it (30 minutes or shorter); lunch and the last
    hour need bars of an hour or shorter.
    """
    since_globex = pl.col("session_minute")
    minute = (since_globex + GLOBEX_OPEN_MINUTE) % (24 * 60)  # Chicago clock minute of the bar's open
    rth_open, rth_close = RTH_OPEN.hour * 60 + RTH_OPEN.minute, RTH_CLOSE.hour * 60 + RTH_CLOSE.minute
    rth_open_session = (rth_open - GLOBEX_OPEN_MINUTE) % (24 * 60)  # 930: 08:30 is 15h30 into the session
    meta = {"source": "bar time", "lag": "known in advance"}
    fs.add(
        "minutes_since_rth_open",
        (since_globex - rth_open_session).cast(pl.Float64),
        "minutes since the 08:30 Chicago open (negative before it)",
        **meta,
    )
    fs.add(
        "minutes_since_globex_open",
        since_globex.cast(pl.Float64),
        "minutes since the 17:00 Chicago Globex open",
        **meta,
    )
    fs.add(
        "session_sin", (2 * np.pi * since_globex / 1380).sin(), "sine of the position in the 23-hour session", **meta
    )
    fs.add(
        "session_cos", (2 * np.pi * since_globex / 1380).cos(), "cosine of the position in the 23-hour session", **meta
    )
    fs.add(
        "is_rth",
        minute.is_between(rth_open, rth_close - 1).cast(pl.Int8),
        "1 in regular trading hours (08:30-15:00 Chicago)",
        **meta,
    )
    fs.add(
        "is_asia",
        (since_globex < 9 * 60).cast(pl.Int8),
        "1 in the Asian hours of the session (17:00-02:00 Chicago)",
        **meta,
    )
    fs.add(
        "is_europe",
        since_globex.is_between(9 * 60, rth_open_session - 1).cast(pl.Int8),
        "1 in the European hours (02:00-08:30 Chicago)",
        **meta,
    )
    if bar_minutes <= 60:
        fs.add(
            "is_lunch",
            minute.is_between(11 * 60, 12 * 60 + 59).cast(pl.Int8),
            "1 over the US lunch hours (11:00-13:00 Chicago)",
            **meta,
        )
        fs.add(
            "is_last_hour",
            minute.is_between(rth_close - 60, rth_close - 1).cast(pl.Int8),
            "1 in the last regular hour (14:00-15:00 Chicago)",
            **meta,
        )
    if bar_minutes > 30:
        return
    # The opening range is the first 30 regular minutes; it counts only once those have closed,
    # and until the next one forms the last one stands.
    opening = since_globex.is_between(rth_open_session, rth_open_session + 29)
    day = pl.col("trade_date")
    high = pl.col("high").filter(opening).max().over(day)
    low = pl.col("low").filter(opening).min().over(day)
    formed = (since_globex + bar_minutes >= rth_open_session + 30) & high.is_not_null()
    or_high = pl.when(formed).then(high).forward_fill()
    or_low = pl.when(formed).then(low).forward_fill()
    fs.add(
        "opening_range_pos",
        (pl.col("close") - or_low) / (or_high - or_low),
        "close within the latest 30-minute opening range (0 at its low, 1 at its high)",
        source="bars",
        lag="formed range only",
    )
    fs.add(
        "opening_range_width",
        (or_high - or_low) / pl.col("close"),
        "width of the latest opening range / close",
        source="bars",
        lag="formed range only",
    )
