"""Taking a source's answer into the raw layer: validate it whole, then store it day by day."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from cbi_assets.calendars import expected_days
from cbi_assets.raw.datasets import RawDataset
from cbi_assets.raw.errors import EmptyResponseError, RawDataError
from cbi_assets.raw.quality import (
    SOURCE_LINE,
    describe_impossible,
    impossible_values,
    partition_day,
    summarize_impossible,
    validate_structure,
)
from cbi_assets.raw.store import PartitionStore, day_digests

_DAY = "__partition_day"
STORED_AT_ONCE = 1000  # days stored in one batch (and one progress line) under the dataset's lock


@dataclass
class IngestReport:
    dataset: str
    origin: str
    start: dt.date
    end: dt.date
    rows: int = 0
    new: list[dt.date] = field(default_factory=list)
    unchanged: list[dt.date] = field(default_factory=list)
    revised: list[dt.date] = field(default_factory=list)
    set_aside: int = 0  # records with impossible values kept out of the lake (see ingest's set_aside)
    seconds: float = 0.0
    taken: pl.DataFrame | None = field(default=None, repr=False)  # the records of the window, as sent

    @property
    def days(self) -> int:
        return len(self.new) + len(self.unchanged) + len(self.revised)

    def metadata(self) -> dict:
        return {
            "source": self.origin,
            "requested": f"{self.start}..{self.end}",
            "rows": self.rows,
            "days_with_data": self.days,
            "days_new": len(self.new),
            "days_unchanged": len(self.unchanged),
            # A revision keeps the earlier version beside the new one; list them so nobody misses it.
            "days_revised": len(self.revised),
            "revised": [d.isoformat() for d in self.revised[:10]],
            "records_set_aside": self.set_aside,
            "first_day": min(self.new + self.unchanged + self.revised).isoformat() if self.days else None,
            "last_day": max(self.new + self.unchanged + self.revised).isoformat() if self.days else None,
            "rows_per_s": round(self.rows / self.seconds) if self.seconds else None,
        }


def within_window(dataset: RawDataset, frame: pl.DataFrame, start: dt.date, end: dt.date) -> pl.DataFrame:
    """The records whose day partition lies in [start, end], with that day in a column."""
    return frame.with_columns(partition_day(dataset).alias(_DAY)).filter(pl.col(_DAY).is_between(start, end))


def ingest(
    dataset: RawDataset,
    frame: pl.DataFrame,
    store: PartitionStore,
    start: dt.date,
    end: dt.date,
    *,
    origin: str,
    received_at: dt.datetime,
    progress: Callable[[str], None] | None = None,
    set_aside: bool = False,
) -> IngestReport:
    """Store a source's records for [start, end], one immutable partition per day.

    The whole batch is validated before the first write, so bad input changes nothing. Records with
    impossible values (quality.impossible_values) refuse the batch, or with `set_aside` are kept out of the
    day partitions and stored, whole and with what was wrong, beside them (PartitionStore.set_aside).
    """
    began = time.perf_counter()
    validate_structure(dataset, frame, origin)
    problems = impossible_values(dataset, frame)
    set_apart = 0
    if problems.height:
        if not set_aside:
            raise RawDataError(describe_impossible(dataset, problems, origin) + " Nothing was written.")
        bad = problems["record"].unique()
        rows = frame.with_row_index("__record")
        aside = rows.filter(pl.col("__record").is_in(bad.implode())).join(
            problems.group_by("record").agg(
                pl.format("{} = {} {}", "column", "value", "problem").str.join("; ").alias("problems")
            ),
            left_on="__record",
            right_on="record",
        )
        store.set_aside(aside.drop("__record"), origin, received_at)
        frame = rows.filter(~pl.col("__record").is_in(bad.implode())).drop("__record")
        set_apart = len(bad)
        if progress:
            progress(f"{dataset.name}: {summarize_impossible(problems)} set aside, as CBI_SET_ASIDE asks")
    frame = frame.drop(SOURCE_LINE, strict=False)
    window = within_window(dataset, frame, start, end)
    if window.is_empty():
        due = expected_days(dataset.calendar, max(start, dataset.start), end)
        if due:
            raise EmptyResponseError(
                f"{origin}: no {dataset.describe()} records for {start}..{end}, which has {len(due)} "
                f"trading day(s) from {due[0]} on. Check the symbol, the dates and your data "
                "subscription; nothing was written."
            )
    report = IngestReport(dataset.name, origin, start, end, set_aside=set_apart, taken=window.drop(_DAY))
    window = window.with_columns(pl.lit(received_at).cast(pl.Datetime("us", "UTC")).alias("ingested_at"))
    digests = day_digests(window, _DAY)
    by_day = sorted(window.partition_by(_DAY, as_dict=True, maintain_order=True, include_key=False).items())
    for first in range(0, len(by_day), STORED_AT_ONCE):
        batch = [(day, records, digests[day]) for (day,), records in by_day[first : first + STORED_AT_ONCE]]
        for (day, records, _), outcome in zip(batch, store.write_days(batch), strict=True):
            getattr(report, outcome).append(day)
            report.rows += records.height
        if progress and len(by_day) > STORED_AT_ONCE:
            progress(f"{dataset.name}: stored {first + len(batch):,} of {len(by_day):,} days (up to {batch[-1][0]})")
    report.seconds = time.perf_counter() - began
    return report
