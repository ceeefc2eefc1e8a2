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

    @property
    def label(self) -> str:
        raise NotImplementedError

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
