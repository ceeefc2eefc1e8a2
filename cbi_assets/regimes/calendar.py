"""The named regime calendar: consecutive periods with a training weight each.

The catalogue holds the desk's plan; a run may replace it by configuration. Either way the
calendar must give every date exactly one regime, which `calendar_frame` checks before anything
is weighted by it.
"""

from __future__ import annotations

import datetime as dt
import itertools

import polars as pl

from cbi_assets.catalogue import REGIMES, Regime

SCHEMA = {"regime": pl.String, "start": pl.Date, "end": pl.Date, "weight": pl.Float64}


def calendar_frame(regimes: tuple[Regime, ...] | list[Regime] = REGIMES) -> pl.DataFrame:
    """`regime`, `start`, `end` (null: open), `weight`, sorted by start; ValueError unless it tiles time."""
    rows = sorted(regimes, key=lambda r: r.start or dt.date.min)
    if not rows:
        raise ValueError("the regime calendar is empty; give at least one regime open at both ends")
    names = [r.name for r in rows]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"regime names must be unique; repeated: {repeated}")
    if rows[0].start is not None:
        raise ValueError(
            f"the first regime {rows[0].name!r} starts {rows[0].start}: leave its start open (null) "
            "so dates before it have a regime"
        )
    if rows[-1].end is not None:
        raise ValueError(
            f"the last regime {rows[-1].name!r} ends {rows[-1].end}: leave its end open (null) "
            "so new dates have a regime"
        )
    for before, after in itertools.pairwise(rows):
        if before.end is None or after.start != before.end + dt.timedelta(days=1):
            raise ValueError(
                f"regimes {before.name!r} (ends {before.end}) and {after.name!r} (starts {after.start}) "
                "must meet: each regime starts the day after the previous one ends"
            )
    for r in rows:
        if not r.weight > 0:
            raise ValueError(f"regime {r.name!r} has weight {r.weight}; weights must be positive")
        if r.start and r.end and r.end < r.start:
            raise ValueError(f"regime {r.name!r} ends ({r.end}) before it starts ({r.start})")
    return pl.DataFrame([(r.name, r.start, r.end, float(r.weight)) for r in rows], schema=SCHEMA, orient="row")


def regimes_of(dates: pl.Series, calendar: pl.DataFrame) -> pl.Series:
    """The named regime of each date (the calendar tiles time, so an as-of join on `start` is exact)."""
    starts = calendar.select(pl.col("start").fill_null(dt.date.min), "regime").sort("start")
    frame = pl.DataFrame({"date": dates.cast(pl.Date)}).with_row_index("row").sort("date")
    joined = frame.join_asof(starts, left_on="date", right_on="start", strategy="backward").sort("row")
    return joined["regime"].alias("regime")
