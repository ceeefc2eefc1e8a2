"""The named regime calendar: consecutive periods with a training weight each, and the date each
was declared.

The catalogue holds the desk's plan; a run may replace it by configuration. Either way the
calendar must give every date exactly one regime, which `calendar_frame` checks before anything
is weighted by it.

A regime is named in hindsight: the calendar says when the 2008 crisis began, not when the desk
could have known. `known_by` cuts the calendar to the regimes declared by a date, which is what a
walk-forward fold trained then may weight its rows by; the live system uses the whole calendar.
"""

from __future__ import annotations

import datetime as dt
import itertools

import polars as pl

from cbi_assets.catalogue import DECLARATION_LAG, REGIMES, Regime

SCHEMA = {"regime": pl.String, "start": pl.Date, "end": pl.Date, "weight": pl.Float64, "declared": pl.Date}


def calendar_frame(regimes: tuple[Regime, ...] | list[Regime] = REGIMES) -> pl.DataFrame:
    """`regime`, `start`, `end` (null: open), `weight`, `declared` (null: known from the beginning), sorted
    by start; ValueError unless it tiles time."""
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
    return pl.DataFrame(
        [(r.name, r.start, r.end, float(r.weight), r.declared_on) for r in rows], schema=SCHEMA, orient="row"
    )


def with_declared(calendar: pl.DataFrame) -> pl.DataFrame:
    """The calendar with its `declared` column; a calendar stored before regimes had one gets the default
    (its start plus `DECLARATION_LAG`)."""
    if "declared" in calendar.columns:
        return calendar
    return calendar.with_columns((pl.col("start").cast(pl.Date) + DECLARATION_LAG).alias("declared"))


def known_by(calendar: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """The calendar as the desk knew it on `day`: only the regimes declared by then, the last of them open
    towards the future, so a later row takes the weight of the regime in force at `day`."""
    calendar = with_declared(calendar).sort("start", nulls_last=False)
    known = calendar.filter(pl.col("declared").is_null() | (pl.col("declared") <= day))
    if known.is_empty():  # nothing declared yet: the first regime stands for all time
        known = calendar.head(1)
    return known.with_columns(
        pl.when(pl.int_range(pl.len()) == pl.len() - 1).then(None).otherwise(pl.col("end")).alias("end")
    )


def regimes_of(dates: pl.Series, calendar: pl.DataFrame) -> pl.Series:
    """The named regime of each date (the calendar tiles time, so an as-of join on `start` is exact)."""
    starts = calendar.select(pl.col("start").fill_null(dt.date.min), "regime").sort("start")
    frame = pl.DataFrame({"date": dates.cast(pl.Date)}).with_row_index("row").sort("date")
    joined = frame.join_asof(starts, left_on="date", right_on="start", strategy="backward").sort("row")
    return joined["regime"].alias("regime")
