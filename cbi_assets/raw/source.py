"""What the raw layer asks of a source resource (Databento, FRED, Yahoo, local files, the sample)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl

from cbi_assets.calendars import CHICAGO
from cbi_assets.raw.datasets import RawDataset


class Source(dg.ConfigurableResource):
    """A source of raw records. Subclasses say where they come from (`label`) and fetch them."""

    through: str | None = None  # the last day to take in (YYYY-MM-DD); unset: today
    # Take the other records of a batch with impossible values and set those aside (raw.ingest), instead of
    # refusing the batch: for a source known to carry a few broken rows the desk has looked at.
    set_aside: bool = False

    @property
    def label(self) -> str:
        raise NotImplementedError

    def origin(self, dataset: RawDataset) -> str:
        """Where `dataset`'s records come from, as an error names it (a file, where the source has one)."""
        return self.label

    def fetch(self, dataset: RawDataset, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Every record of `dataset` whose trade date lies in [start, end], as the source sends it."""
        raise NotImplementedError

    def coverage(self, dataset: RawDataset) -> tuple[dt.date, dt.date]:
        """The first and last day this source can have records of. A live source: from the dataset's
        start to today in Chicago (the evening cycle runs after the close), or to `through`."""
        return dataset.start, self.last_day()

    def last_day(self) -> dt.date:
        today = dt.datetime.now(CHICAGO).date()
        return min(today, dt.date.fromisoformat(self.through)) if self.through else today
