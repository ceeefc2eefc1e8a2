"""Point-in-time placement of a series on the trading-day grid.

An observation is used from the first session on which it was published, never from the date it
describes: FRED publishes a daily series the next business day and the CPI of a month about two
weeks after the month ends. Lags are per series and can be changed in configuration.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from cbi_assets.calendars import settlement_sessions
from cbi_assets.catalogue import DAILY_FRESHNESS, FRED_SERIES, FRESHNESS, Freshness


@dataclass(frozen=True)
class ReleaseLag:
    """How long after its observation date a value is known."""

    business_days: int = 0  # sessions after the observation date (daily series)
    calendar_days: int = 0  # days after the observation date, then the next session (monthly series)

    def describe(self) -> str:
        if self.calendar_days:
            return f"published {self.calendar_days} days after the date it describes"
        if self.business_days:
            return f"published {self.business_days} business day(s) after the observation"
        return "known at the session's close"


# CPI of month M is dated M-01 and released around the 12th-15th of M+1: 45 days covers it.
RELEASE_LAGS: dict[str, ReleaseLag] = {
    series_id: ReleaseLag(calendar_days=45) if s.frequency == "monthly" else ReleaseLag(business_days=1)
    for series_id, s in FRED_SERIES.items()
}
SAME_DAY = ReleaseLag()


def known_dates(dates: pl.Series, lag: ReleaseLag) -> pl.Series:
    """The first session on which each observation (by its date) is known."""
    days = dates.to_numpy().astype("datetime64[D]")
    if len(days) == 0:
        return pl.Series(dates.name, [], dtype=pl.Date)
    first = days.min().astype(dt.date)
    sessions = settlement_sessions(first, days.max().astype(dt.date) + dt.timedelta(days=lag.calendar_days + 30))
    if lag.calendar_days:
        index = np.searchsorted(sessions, days + np.timedelta64(lag.calendar_days, "D"), side="left")
    else:
        # The observation's own session (if it is one) counts as 0 business days.
        index = np.searchsorted(sessions, days, side="right" if lag.business_days else "left") + max(
            lag.business_days - 1, 0
        )
    return pl.Series(dates.name, sessions[np.minimum(index, len(sessions) - 1)]).cast(pl.Date)


def on_grid(
    grid: pl.DataFrame,
    observations: pl.DataFrame,
    value: str,
    lag: ReleaseLag,
    name: str,
    fresh: Freshness | None = None,
) -> pl.DataFrame:
    """Add `name` to `grid` (a `date` column of sessions): the latest value known on each date, for as long
    as it is fresh (`fresh`; by default the rule of the series' frequency, told by its lag); later, null."""
    fresh = fresh or (FRESHNESS["monthly"] if lag.calendar_days else DAILY_FRESHNESS)
    known = (
        observations.filter(pl.col(value).is_not_null())
        .select(pl.col("date"), pl.col(value).alias(name))
        .with_columns(known_dates(observations.filter(pl.col(value).is_not_null())["date"], lag).alias("known"))
        .sort("known", "date")
        .unique("known", keep="last", maintain_order=True)  # two values known the same day: the later one
        .drop("date")
    )
    placed = grid.sort("date").join_asof(known, left_on="date", right_on="known", strategy="backward")
    return placed.with_columns(pl.when(~stale(placed["date"], placed["known"], fresh)).then(pl.col(name))).drop("known")


def stale(dates: pl.Series, known: pl.Series, fresh: Freshness) -> pl.Series:
    """Whether, on each session of `dates`, a value known since `known` has gone stale under `fresh`."""
    if fresh.days:
        return ((dates - known).dt.total_days() > fresh.days).fill_null(False)
    grid = dates.to_numpy()
    since = np.searchsorted(grid, known.fill_null(dates.min()).to_numpy(), side="left")
    elapsed = np.arange(len(grid)) - since  # sessions of the grid since the value became known
    return pl.Series(elapsed > fresh.sessions) & known.is_not_null()
