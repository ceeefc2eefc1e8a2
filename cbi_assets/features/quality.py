"""Checks every feature table gets: finite values, few nulls after warm-up, time order,
rows in line with the calendar; and for master tables distinct, informative columns."""

from __future__ import annotations

import polars as pl

from cbi_assets.calendars import settlement_days
from cbi_assets.catalogue import TIMEFRAMES
from cbi_assets.features.master import Table
from cbi_assets.raw.quality import Finding

NULL_LIMIT = 0.05  # null share allowed in a feature once it has warmed up


def finite_finding(table: Table) -> Finding:
    counts = table.frame.select(
        pl.col(n).is_infinite().sum().alias(n) for n in table.features
    ).row(0, named=True) if table.features else {}
    bad = {k: v for k, v in counts.items() if v}
    return Finding(not bad, f"{len(bad)} columns hold infinite values", {"columns_with_infinities": bad})


def null_finding(table: Table, limit: float = NULL_LIMIT) -> Finding:
    """Null share of each feature from its first value plus its window on (the warm-up)."""
    frame = table.frame
    first = frame.select(pl.col(n).is_not_null().arg_max().alias(n) for n in table.features).row(0, named=True)
    shares = {}
    for spec in table.specs:
        column = frame[spec.name]
        if column.null_count() == frame.height:
            shares[spec.name] = 1.0
            continue
        start = first[spec.name] + spec.warmup
        rest = column.slice(start)
        shares[spec.name] = rest.null_count() / rest.len() if rest.len() else 0.0
    over = {k: round(v, 4) for k, v in sorted(shares.items(), key=lambda kv: -kv[1]) if v > limit}
    worst = dict(sorted(shares.items(), key=lambda kv: -kv[1])[:10])
    return Finding(not over, f"{len(over)} features above {limit:.0%} nulls after warm-up",
                   {"over_limit": over, "worst": {k: round(v, 4) for k, v in worst.items()}, "limit": limit})


def order_finding(table: Table) -> Finding:
    key = "ts" if "ts" in table.frame.columns else "date"
    bad = table.frame.select((pl.col(key) <= pl.col(key).shift(1)).sum()).item() or 0
    return Finding(bad == 0, f"{bad} rows not after the one before in {key}", {"not_increasing": bad, "key": key})


def calendar_finding(table: Table, timeframe: str) -> Finding:
    """Daily: one row per session between the first and last date. Intraday: every session there,
    none with more bars than it has room for."""
    frame = table.frame
    if timeframe == "1d":
        first, last = frame["date"].min(), frame["date"].max()
        expected = len(settlement_days(first, last))
        return Finding(frame.height == expected, f"{frame.height} rows for {expected} sessions",
                       {"rows": frame.height, "sessions": expected, "first": str(first), "last": str(last)})
    per_session = frame.group_by("trade_date").len()
    sessions = settlement_days(per_session["trade_date"].min(), per_session["trade_date"].max())
    room = -(-1380 // TIMEFRAMES[timeframe])
    overfull = per_session.filter(pl.col("len") > room).height
    thin = per_session.filter(pl.col("len") < 0.8 * room).height
    passed = per_session.height == len(sessions) and overfull == 0
    return Finding(passed, f"{per_session.height} of {len(sessions)} sessions, {overfull} overfull, {thin} thin",
                   {"sessions": per_session.height, "expected_sessions": len(sessions), "bars_per_session_max": room,
                    "median_bars": float(per_session["len"].median()), "overfull": overfull, "thin_sessions": thin})


def distinct_finding(table: Table, minimum: int) -> Finding:
    """Enough features, none constant and none an exact copy of another."""
    frame = table.frame.select(table.features)
    constant = [c for c in frame.columns if frame[c].drop_nulls().n_unique() <= 1]
    hashes: dict[int, list[str]] = {}
    for c in frame.columns:
        hashes.setdefault(int(frame[c].hash(seed=7).sum()), []).append(c)
    duplicates = [group for group in hashes.values() if len(group) > 1 and all(frame[g].equals(frame[group[0]]) for g in group)]
    passed = not constant and not duplicates and len(frame.columns) >= minimum
    return Finding(passed, f"{len(frame.columns)} features (at least {minimum}), {len(constant)} constant, {len(duplicates)} duplicated",
                   {"features": len(frame.columns), "minimum": minimum, "constant": constant, "duplicates": duplicates})
