"""Checks every feature table gets: finite values, few nulls after warm-up, time order,
rows in line with the calendar; and for master tables distinct, informative columns.

A `Profile` gathers what the checks need from a table's rows part by part, in time order, so a
table too large to hold whole (the MES 1-minute master, built and written in parts) is checked as
it streams to disk. A table held whole is one part.
"""

from __future__ import annotations

import math

import polars as pl

from cbi_assets.calendars import settlement_days
from cbi_assets.catalogue import TIMEFRAMES
from cbi_assets.features.master import Table
from cbi_assets.features.spec import FeatureSpec
from cbi_assets.raw.quality import Finding

NULL_LIMIT = 0.05  # null share allowed in a feature once it has warmed up


class Profile:
    """What the checks need from a feature table, taken from its parts in time order (`add`)."""

    def __init__(self):
        self.rows = self.parts = 0
        self.specs: list[FeatureSpec] = []

    def _start(self, table: Table) -> None:
        self.specs, self.keys = table.specs, table.keys
        # The time key: bars' close `ts`, or a session's `date` (none in a slice of features alone).
        self.key = next((k for k in ("ts", "date") if k in table.frame.columns), None)
        self.names = names = table.features
        self.infinite = dict.fromkeys(names, 0)
        self.first: dict[str, int] = {}  # the row of each feature's first value
        self.after = {n: [0, 0] for n in names}  # nulls and rows once the feature has warmed up
        self.not_increasing = 0
        self.bounds: tuple | None = None  # the least and greatest key
        self.last = None  # the key of the last row taken
        self.per_session: list[pl.DataFrame] = []  # rows per trade date, intraday tables
        self.varying: set[str] = set()
        self.value: dict[str, object] = {}  # the one value seen so far of a feature not yet varying
        self.copies = [names]  # groups of features equal on every row so far
        self.tail = table.frame.clear()

    def add(self, table: Table) -> Profile:
        """Take in the next part: its rows follow every row taken so far."""
        if not self.specs:
            self._start(table)
        self.parts += 1
        frame = table.frame
        if frame.is_empty():
            return self
        height, offset = frame.height, self.rows
        self._extremes(frame)
        self._nulls(frame, offset)
        if self.key:
            self._order(frame[self.key])
        if "trade_date" in frame.columns:
            self.per_session.append(frame.group_by("trade_date").len())
        self._copies(frame)
        self.tail = pl.concat([self.tail, frame.tail(3)]).tail(3)
        self.rows += height
        return self

    def _order(self, key: pl.Series) -> None:
        self.not_increasing += (key <= key.shift(1)).sum()
        if self.rows and key[0] <= self.last:
            self.not_increasing += 1
        self.last = key[-1]
        low, high = key.min(), key.max()
        self.bounds = (low, high) if self.bounds is None else (min(self.bounds[0], low), max(self.bounds[1], high))

    def _nulls(self, frame: pl.DataFrame, offset: int) -> None:
        """Each feature's first value, then its nulls from that row plus its window on."""
        unseen = [n for n in self.names if n not in self.first and frame[n].null_count() < frame.height]
        if unseen:
            rows = frame.select(pl.col(n).is_not_null().arg_max() for n in unseen).row(0)
            self.first.update({n: offset + r for n, r in zip(unseen, rows, strict=True)})
        for spec in self.specs:
            if spec.name not in self.first:
                continue
            start = self.first[spec.name] + spec.warmup - offset
            column = frame[spec.name] if start <= 0 else frame[spec.name].slice(start)
            self.after[spec.name][0] += column.null_count()
            self.after[spec.name][1] += column.len()

    def _extremes(self, frame: pl.DataFrame) -> None:
        """Infinite values (counted where a least or greatest value is infinite), and which features
        vary: two non-null values differ, in a part or across parts."""
        names = [n for n in self.names if frame[n].null_count() < frame.height]
        extremes = frame.select(
            *(pl.col(n).min().alias(f"{i}l") for i, n in enumerate(names)),
            *(pl.col(n).max().alias(f"{i}h") for i, n in enumerate(names)),
        ).row(0)
        for n, low, high in zip(names, extremes[: len(names)], extremes[len(names) :], strict=True):
            if isinstance(low, float) and (math.isinf(low) or math.isinf(high)):
                self.infinite[n] += frame[n].is_infinite().sum()
            if n in self.varying:
                continue
            if low != high or self.value.get(n, low) != low:
                self.varying.add(n)
            self.value[n] = low

    def _copies(self, frame: pl.DataFrame) -> None:
        """Split each group of features equal so far by whether they are equal on this part's rows
        (hashes first, then exact comparison), keeping groups of two or more."""
        groups = []
        for group in self.copies:
            # Features with no value in the part are equal on it; the rest by their hashes.
            empty = [n for n in group if frame[n].null_count() == frame.height]
            if len(empty) > 1:
                groups.append(empty)
            rest = [n for n in group if n not in empty]
            if len(rest) < 2:
                continue
            by_hash: dict[int, list[str]] = {}
            for n, h in zip(rest, frame.select(pl.col(n).hash(seed=7).sum() for n in rest).row(0), strict=True):
                by_hash.setdefault(h, []).append(n)
            for same in by_hash.values():
                while len(same) > 1:
                    equal = [n for n in same if frame[n].equals(frame[same[0]])]
                    if len(equal) > 1:
                        groups.append(equal)
                    same = [n for n in same if n not in equal]
        self.copies = groups

    # --- Findings ---------------------------------------------------------------------------------

    def findings(self, timeframe: str, minimum: int | None = None) -> dict[str, Finding]:
        """Every check's finding, by the name of the asset check; `distinct` with a minimum count."""
        found = {
            "finite": self.finite(),
            "nulls_after_warmup": self.nulls(),
            "increasing": self.order(),
            "calendar": self.calendar(timeframe),
        }
        return found | ({"distinct": self.distinct(minimum)} if minimum is not None else {})

    def finite(self) -> Finding:
        bad = {k: v for k, v in self.infinite.items() if v}
        return Finding(not bad, f"{len(bad)} columns hold infinite values", {"columns_with_infinities": bad})

    def nulls(self, limit: float = NULL_LIMIT) -> Finding:
        """Null share of each feature from its first value plus its window on (the warm-up)."""
        shares = {
            n: (nulls / rows if rows else 0.0) if n in self.first else 1.0 for n, (nulls, rows) in self.after.items()
        }
        over = {k: round(v, 4) for k, v in sorted(shares.items(), key=lambda kv: -kv[1]) if v > limit}
        worst = dict(sorted(shares.items(), key=lambda kv: -kv[1])[:10])
        return Finding(
            not over,
            f"{len(over)} features above {limit:.0%} nulls after warm-up",
            {"over_limit": over, "worst": {k: round(v, 4) for k, v in worst.items()}, "limit": limit},
        )

    def order(self) -> Finding:
        bad = self.not_increasing
        return Finding(
            bad == 0, f"{bad} rows not after the one before in {self.key}", {"not_increasing": bad, "key": self.key}
        )

    def calendar(self, timeframe: str) -> Finding:
        """Daily: one row per session between the first and last date. Intraday: every session there,
        none with more bars than it has room for."""
        if timeframe == "1d":
            first, last = self.bounds or (None, None)
            expected = len(settlement_days(first, last)) if self.rows else 0
            return Finding(
                self.rows == expected,
                f"{self.rows} rows for {expected} sessions",
                {"rows": self.rows, "sessions": expected, "first": str(first), "last": str(last)},
            )
        per_session = pl.concat(self.per_session).group_by("trade_date").agg(pl.col("len").sum())
        sessions = settlement_days(per_session["trade_date"].min(), per_session["trade_date"].max())
        room = -(-1380 // TIMEFRAMES[timeframe])
        overfull = per_session.filter(pl.col("len") > room).height
        thin = per_session.filter(pl.col("len") < 0.8 * room).height
        passed = per_session.height == len(sessions) and overfull == 0
        return Finding(
            passed,
            f"{per_session.height} of {len(sessions)} sessions, {overfull} overfull, {thin} thin",
            {
                "sessions": per_session.height,
                "expected_sessions": len(sessions),
                "bars_per_session_max": room,
                "median_bars": float(per_session["len"].median()),
                "overfull": overfull,
                "thin_sessions": thin,
            },
        )

    def distinct(self, minimum: int) -> Finding:
        """Enough features, none constant and none an exact copy of another."""
        constant = [n for n in self.names if n not in self.varying]
        count = len(self.specs)
        passed = not constant and not self.copies and count >= minimum
        return Finding(
            passed,
            f"{count} features (at least {minimum}), {len(constant)} constant, {len(self.copies)} duplicated",
            {"features": count, "minimum": minimum, "constant": constant, "duplicates": self.copies},
        )


def finite_finding(table: Table) -> Finding:
    return Profile().add(table).finite()


def order_finding(table: Table) -> Finding:
    return Profile().add(table).order()
