"""Whether each input of a feature layer is fresh on the layer's last session (catalogue.Freshness).

A stale input's last value is not carried forward past its limit (pit.on_grid, the futures' forward fills),
so its features turn null rather than constant; this says which inputs that hit, and since when.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from cbi_assets.catalogue import DAILY_FRESHNESS, ENDED_AFTER_SESSIONS, FRED_SERIES, Freshness
from cbi_assets.features.pit import SAME_DAY, ReleaseLag, known_dates
from cbi_assets.raw.quality import Finding


def input_freshness(
    sessions: pl.Series,
    continuous: dict[str, pl.DataFrame],
    symbols: list[str],
    series: dict[str, pl.DataFrame],
    keys: list[str],
    lags: dict[str, ReleaseLag],
) -> pl.DataFrame:
    """One row per input (futures `symbols`, FRED and Yahoo `keys`) present: when its last value became
    known, how long ago that is on the last of `sessions`, its rule, and `fresh`, `stale` or `ended`."""
    grid = np.sort(sessions.unique().to_numpy())
    rows = []
    for symbol in symbols:
        if symbol in continuous:
            closes = continuous[symbol].filter(pl.col("close").is_not_null())
            rows.append(_row(grid, f"{symbol.upper()} front settlement", closes["date"].max(), DAILY_FRESHNESS))
    for key in keys:
        if key in series:
            values = series[key].filter(pl.col("value").is_not_null())
            lag = lags.get(key, SAME_DAY) if key in FRED_SERIES else SAME_DAY
            known = known_dates(values["date"].tail(1), lag)[0] if values.height else None
            rule = FRED_SERIES[key].freshness if key in FRED_SERIES else DAILY_FRESHNESS
            rows.append(_row(grid, f"{'FRED' if key in FRED_SERIES else 'Yahoo'} {key}", known, rule))
    return pl.DataFrame(
        rows,
        schema={
            "input": pl.String,
            "known_since": pl.Date,
            "sessions": pl.Int64,
            "rule": pl.String,
            "state": pl.String,
        },
        orient="row",
    )


def _row(grid: np.ndarray, name: str, known: dt.date | None, rule: Freshness) -> tuple:
    last = grid[-1].astype(dt.date)
    if known is None:
        return (name, None, None, rule.describe(), "ended")
    elapsed = int(
        np.searchsorted(grid, np.datetime64(last), side="right")
        - np.searchsorted(grid, np.datetime64(known), side="right")
    )
    late = (last - known).days > rule.days if rule.days else elapsed > rule.sessions
    state = "ended" if late and elapsed > ENDED_AFTER_SESSIONS else "stale" if late else "fresh"
    return (name, known, max(elapsed, 0), rule.describe(), state)


def freshness_findings(report: pl.DataFrame) -> dict[str, Finding]:
    """`inputs_fresh`: no input stopped recently (blocking: the layer's features would go null at the end);
    `inputs_running`: no input has ended (a warning: its features are null from then on)."""
    return {
        "inputs_fresh": _finding(report, "stale", "every input fresh", ". Fix the source or its ingest"),
        "inputs_running": _finding(report, "ended", "no input has ended", "; its features are null since"),
    }


def _finding(report: pl.DataFrame, state: str, fine: str, then: str) -> Finding:
    hit = report.filter(pl.col("state") == state)
    listed = "; ".join(_since(r) for r in hit.iter_rows(named=True))
    return Finding(
        hit.is_empty(),
        fine if hit.is_empty() else f"{state}: {listed}{then}",
        {state: _listed(hit), "inputs": report.height},
    )


def _since(row: dict) -> str:
    if row["known_since"] is None:
        return f"{row['input']} has no value"
    return (
        f"{row['input']} has no new value since {row['known_since']} ({row['sessions']} sessions; rule {row['rule']})"
    )


def _listed(frame: pl.DataFrame) -> list[dict]:
    return [{k: str(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]
