"""The front-month contract by volume, and the dates it rolls.

The front on a day is the contract that traded the most on the previous session, so the choice
uses nothing the day itself reveals. A roll only moves forward: once volume has left a contract
it never becomes the front again, which keeps a noisy crossover from flapping between two.
"""

from __future__ import annotations

import polars as pl


def front_month(bars: pl.DataFrame) -> pl.DataFrame:
    """Per trade date: the front contract, the one before it, and whether the day is a roll.

    `bars` has `ts_event`, `instrument_id` (null for a continuous series that names no contract)
    and `volume`, one row per contract and day.
    """
    daily = (
        bars.select(
            pl.col("ts_event").dt.date().alias("date"),
            pl.col("instrument_id").cast(pl.Int64).fill_null(-1),
            pl.col("volume").cast(pl.Float64).fill_null(0.0),
        )
        .group_by("date", "instrument_id")
        .agg(pl.col("volume").sum())
        .sort("date", "instrument_id")
    )
    rows = []
    front: int | None = None
    retired: set[int] = set()
    previous_volume: dict[int, float] = {}
    # One pass over plain lists: the rule is sequential, and a frame per day costs more than the rule.
    days, ids, volumes = (daily[c].to_list() for c in ("date", "instrument_id", "volume"))
    for start, end in _runs(days):
        day, today = days[start], dict(zip(ids[start:end], volumes[start:end], strict=True))
        ranking = previous_volume or today  # the very first day has no previous session
        candidates = [i for i in today if i not in retired]
        if not candidates:  # only contracts already rolled out of: keep the current one
            candidates = list(today)
        leader = max(candidates, key=lambda i: (ranking.get(i, 0.0), -i))
        before = front
        if (
            front is None
            or front not in today
            or (leader != front and ranking.get(leader, 0.0) > ranking.get(front, 0.0))
        ):
            if front is not None and leader != front:
                retired.add(front)
            front = leader
        rows.append(
            (
                day,
                front,
                before if before != front else None,
                before is not None and before != front,
                today.get(front, 0.0),
            )
        )
        previous_volume = today
    frame = pl.DataFrame(
        rows,
        schema={
            "date": pl.Date,
            "instrument_id": pl.Int64,
            "rolled_from": pl.Int64,
            "rolled": pl.Boolean,
            "volume": pl.Float64,
        },
        orient="row",
    )
    return frame.with_columns(pl.col("instrument_id", "rolled_from").replace(-1, None))


def _runs(values: list) -> list[tuple[int, int]]:
    """[start, end) of each run of equal consecutive values."""
    starts = [i for i in range(len(values)) if i == 0 or values[i] != values[i - 1]]
    return list(zip(starts, [*starts[1:], len(values)], strict=True))
