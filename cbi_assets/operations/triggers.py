"""When the sensors act: confirmed regime shifts, big market moves, failed validations and correlation breakdowns.

Plain functions on polars frames; the sensors in `schedules/sensors.py` read the inputs and act on the answers.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

SHIFT_COLUMNS = ("date", "since", "from_state", "to_state")
FIRST_LOOK_SESSIONS = 5  # with no cursor yet, shifts confirmed in the last 5 sessions still count

VIX_ALERT = 25.0  # VIX level above which a day is audited
ZL_MOVE = 0.02  # |daily move| of the roll-adjusted ZL close
FX_MOVE = 0.03  # |daily move| of the broad dollar index or of USD/BRL

# ZL's 63-session correlations watched for a breakdown: pair name -> column of shared/cross_asset.
CORRELATION_COLUMNS = {"zl_cl": "zl_cl_corr_63", "zl_ho": "zl_ho_corr_63"}
NORM_SESSIONS = 252  # the one-year norm: the 252 sessions before the day
NORM_WIDTH = 2.0  # a departure wider than 2 standard deviations of the norm is a breakdown


def regime_partition(to_state: str, since: dt.date) -> str:
    """The regime partition of a detected regime, as `{a}/regimes/current` names it: detected_<state>_<YYYYMMDD>."""
    return f"detected_{to_state}_{since:%Y%m%d}"


def _require(frame: pl.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what}: missing column(s) {', '.join(missing)} (has {', '.join(frame.columns)}); "
            "rebuild it with the current code"
        )


def new_shifts(
    shifts: pl.DataFrame, sessions: pl.Series, after: dt.date | None, first_look: int = FIRST_LOOK_SESSIONS
) -> pl.DataFrame:
    """The shifts confirmed (`date`) after `after`; when `after` is None (nothing seen yet), those confirmed in the
    last `first_look` of `sessions` (the dates of the state frame). Adds `partition`, sorted by date."""
    _require(shifts, SHIFT_COLUMNS, "shifts frame")
    if after is None:
        days = sessions.drop_nulls().unique().sort()
        if days.is_empty():
            return shifts.head(0).with_columns(pl.lit("").alias("partition"))
        after = days[-first_look - 1] if days.len() > first_look else dt.date.min
    found = shifts.filter(pl.col("date") > after).sort("date")
    return found.with_columns(
        pl.struct("to_state", "since")
        .map_elements(lambda r: regime_partition(r["to_state"], r["since"]), return_dtype=pl.String)
        .alias("partition")
    )


def _newest_change(frame: pl.DataFrame, column: str) -> tuple[dt.date, float | None, float | None]:
    """(the newest date, the value on it, its relative change from the row before)."""
    frame = frame.select("date", column).drop_nulls(column).sort("date")
    if frame.height == 0:
        return dt.date.min, None, None
    value = float(frame[column][-1])
    before = float(frame[column][-2]) if frame.height > 1 else None
    return frame["date"][-1], value, (value / before - 1.0 if before else None)


def market_moves(
    volatility: pl.DataFrame, zl_bars: pl.DataFrame, macro: pl.DataFrame, fx: pl.DataFrame
) -> tuple[dt.date, list[str]]:
    """The newest day of the data and what moved on it (empty when calm): VIX above 25 (`vix` of
    shared/volatility), a ZL daily move above 2% (roll-adjusted close `close * adj` of the `zl` front), and the
    broad dollar (`broad_dollar` of shared/macro, FRED DTWEXBGS) or USD/BRL (`usd_brl` of shared/fx) moving more
    than 3%. An input whose newest row is older than the newest day says nothing about that day."""
    _require(volatility, ("date", "vix"), "shared/volatility")
    _require(zl_bars, ("date", "close", "adj"), "ZL continuous bars")
    _require(macro, ("date", "broad_dollar"), "shared/macro")
    _require(fx, ("date", "usd_brl"), "shared/fx")
    if "symbol" in zl_bars.columns:
        zl_bars = zl_bars.filter(pl.col("symbol") == "zl")
    zl = zl_bars.select("date", (pl.col("close") * pl.col("adj")).alias("zl_close"))
    readings = {
        "vix": _newest_change(volatility, "vix"),
        "zl": _newest_change(zl, "zl_close"),
        "dollar": _newest_change(macro, "broad_dollar"),
        "brl": _newest_change(fx, "usd_brl"),
    }
    day = max(r[0] for r in readings.values())
    if day == dt.date.min:
        raise ValueError("market_moves: no dated rows in shared/volatility, the ZL bars, shared/macro or shared/fx")
    moved = []
    on_day = {name: r for name, r in readings.items() if r[0] == day}
    if "vix" in on_day and on_day["vix"][1] is not None and on_day["vix"][1] > VIX_ALERT:
        moved.append(f"VIX {on_day['vix'][1]:.1f} > {VIX_ALERT:g}")
    for name, label, limit in (("zl", "ZL", ZL_MOVE), ("dollar", "broad dollar", FX_MOVE), ("brl", "USD/BRL", FX_MOVE)):
        change = on_day.get(name, (None, None, None))[2]
        if change is not None and abs(change) > limit:
            moved.append(f"{label} {change:+.1%} in a day (limit {limit:.0%})")
    return day, moved


def correlation_breakdowns(
    cross: pl.DataFrame, columns: dict[str, str] | None = None, sessions: int = NORM_SESSIONS, width: float = NORM_WIDTH
) -> pl.DataFrame:
    """Each watched correlation on the newest day against its norm: the mean and standard deviation of the same
    column over the `sessions` rows before that day. `breakdown` when |corr - mean| > width x std. A pair without
    a full window of values is left out (too little history to know its norm).
    Columns: pair, column, day, corr, mean, std, departure (in std), breakdown."""
    columns = columns or CORRELATION_COLUMNS
    _require(cross, ("date", *columns.values()), "shared/cross_asset")
    cross = cross.sort("date")
    rows = []
    for pair, column in columns.items():
        values = cross.select("date", column).drop_nulls(column)
        if values.height < sessions + 1:
            continue
        day, corr = values["date"][-1], float(values[column][-1])
        norm = values[column][-sessions - 1 : -1]
        mean, std = float(norm.mean()), float(norm.std())
        departure = abs(corr - mean) / std if std > 0 else (0.0 if corr == mean else float("inf"))
        rows.append(
            {
                "pair": pair,
                "column": column,
                "day": day,
                "corr": corr,
                "mean": mean,
                "std": std,
                "departure": departure,
                "breakdown": abs(corr - mean) > width * std,
            }
        )
    schema = {
        "pair": pl.String,
        "column": pl.String,
        "day": pl.Date,
        "corr": pl.Float64,
        "mean": pl.Float64,
        "std": pl.Float64,
        "departure": pl.Float64,
        "breakdown": pl.Boolean,
    }
    return pl.DataFrame(rows, schema=schema)


def failed_validations(status: pl.DataFrame, seen_day: dt.date | None, seen: set[str]) -> pl.DataFrame:
    """Rows of monitoring.validation_status with passed = false that are new: validated after `seen_day`, or on it
    but not among `seen` (keys `<market>:<horizon>`, since a day's horizons are written one by one). Adds `market`
    (lower case) and `key`, sorted by validated_on."""
    _require(status, ("asset", "horizon", "validated_on", "passed"), "monitoring.validation_status")
    frame = status.with_columns(
        pl.col("asset").str.to_lowercase().alias("market"),
        pl.col("validated_on").cast(pl.Date),
    ).with_columns(pl.concat_str("market", pl.lit(":"), "horizon").alias("key"))
    frame = frame.filter(pl.col("passed").eq(False))  # null (not judged) is no failure
    if seen_day is not None:
        frame = frame.filter(
            (pl.col("validated_on") > seen_day)
            | ((pl.col("validated_on") == seen_day) & ~pl.col("key").is_in(sorted(seen)))
        )
    return frame.sort("validated_on", "market", "horizon")
