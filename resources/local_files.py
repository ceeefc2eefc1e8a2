"""A folder of files as the source of every dataset (the layout of `shared/data/real`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from cbi_assets.calendars import globex_session
from cbi_assets.catalogue import DATABENTO_DATASET
from cbi_assets.raw.datasets import RawDataset
from cbi_assets.raw.errors import RawDataError
from cbi_assets.raw.files import (
    DAILY_COLUMNS,
    FRED_COLUMNS,
    YAHOO_COLUMNS,
    dbn_files,
    read_csv_table,
    read_dbn_files,
)
from cbi_assets.raw.quality import partition_day
from cbi_assets.raw.source import Source


class LocalFilesSource(Source):
    """Futures from `dbn/GLBX.MDP3/*.dbn.zst` (else `daily/<SYMBOL>.csv`), FRED from `fred/`, Yahoo from `yahoo/`."""

    root: str

    @property
    def label(self) -> str:
        return f"local files in {self.root}"

    def origin(self, dataset: RawDataset) -> str:
        root = Path(self.root)
        if dataset.role == "macro":
            return str(root / "fred" / f"{dataset.symbol}.csv")
        if dataset.role == "history":
            return str(root / "yahoo" / f"{dataset.symbol}.csv")
        paths = dbn_files(root / "dbn" / DATABENTO_DATASET, dataset.schema, dataset.symbol)
        if paths:
            return ", ".join(str(p) for p in paths)
        return str(root / "daily" / f"{dataset.symbol}.csv")

    def coverage(self, dataset: RawDataset) -> tuple[dt.date, dt.date]:
        """The first and last day the folder holds records of `dataset` (up to `through`)."""
        days = self.fetch(dataset, dataset.start, self.last_day()).select(partition_day(dataset))
        if days.is_empty():
            return dataset.start, dataset.start - dt.timedelta(days=1)  # nothing: an empty span
        return days.to_series().min(), days.to_series().max()

    def fetch(self, dataset: RawDataset, start: dt.date, end: dt.date) -> pl.DataFrame:
        root = Path(self.root)
        if not root.is_dir():
            raise RawDataError(
                f"{root}: the folder of local files does not exist. Set CBI_LOCAL_DIR to a folder with daily/, "
                "fred/ and dbn/ inside (the layout of shared/data/real), or pick another source with CBI_SOURCE."
            )
        if dataset.role == "futures":
            frame = self._futures(root, dataset, start, end)
        elif dataset.role == "macro":
            frame = read_csv_table(root / "fred" / f"{dataset.symbol}.csv", FRED_COLUMNS)
        else:
            frame = read_csv_table(
                root / "yahoo" / f"{dataset.symbol}.csv", YAHOO_COLUMNS, optional=("adj_close", "volume")
            )
        return frame.filter(_within(dataset, start, end))

    def _futures(self, root: Path, dataset: RawDataset, start: dt.date, end: dt.date) -> pl.DataFrame:
        paths = dbn_files(root / "dbn" / DATABENTO_DATASET, dataset.schema, dataset.symbol)
        csv = root / "daily" / f"{dataset.symbol}.csv"
        if paths:
            records = read_dbn_files(paths)
            # A DBN download wins over a daily file, unless it holds nothing of the requested days.
            if not csv.is_file() or not records.filter(_within(dataset, start, end)).is_empty():
                return records
        if dataset.schema == "ohlcv-1d" and csv.is_file():
            bars = read_csv_table(csv, DAILY_COLUMNS, optional=("volume", "open_interest"))
            # A daily file is the front month already; it names no contract.
            return bars.with_columns(pl.lit(dataset.symbol).alias("symbol"))
        where = f"{root}/dbn/{DATABENTO_DATASET}/*.dbn.zst with {dataset.schema} records of {dataset.symbol}"
        if dataset.schema == "ohlcv-1d":
            where += f", or {csv}"
        raise RawDataError(
            f"{self.label} has no {dataset.describe()}: expected {where}. Add the file or pick another source."
        )


def _within(dataset: RawDataset, start: dt.date, end: dt.date) -> pl.Expr:
    if dataset.intraday:
        opens, closes = globex_session(start)[0], globex_session(end)[1]
        return pl.col("ts_event").is_between(opens, closes, closed="left")
    return pl.col("ts_event").dt.date().is_between(start, end)
