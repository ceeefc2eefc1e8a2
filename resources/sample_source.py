"""The embedded sample as a source: generated once per configuration, then read as local files."""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
from pathlib import Path

import polars as pl

from cbi_assets.calendars import settlement_days
from cbi_assets.raw.datasets import RawDataset
from cbi_assets.raw.source import Source
from cbi_assets.sample import SampleConfig, build_sample
from resources.local_files import LocalFilesSource


class SampleSource(Source):
    """Deterministic, offline market data for every dataset in the catalogue.

    The generated files sit in `cache_dir` (one folder per configuration) and are read through
    the same readers as a real folder of files, DBN included.
    """

    cache_dir: str
    end: str  # ISO date of the last session
    start: str = SampleConfig.start.isoformat()  # ISO date of the first day of daily history
    seed: int = 20_240_601
    intraday_sessions: int = 60
    tick_sessions: int = 2
    trades_per_session: int = 20_000

    @property
    def label(self) -> str:
        return f"sample source (seed {self.seed}, to {self.end})"

    def config(self) -> SampleConfig:
        return SampleConfig(
            end=dt.date.fromisoformat(self.end),
            start=dt.date.fromisoformat(self.start),
            seed=self.seed,
            intraday_sessions=self.intraday_sessions,
            tick_sessions=self.tick_sessions,
            trades_per_session=self.trades_per_session,
        )

    def folder(self) -> Path:
        """The generated files, built on first use; concurrent runs wait for one builder."""
        settings = json.dumps(self.model_dump(exclude={"cache_dir"}), sort_keys=True, default=str)
        folder = Path(self.cache_dir) / f"sample-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return build_sample(self.config(), folder)

    def fetch(self, dataset: RawDataset, start: dt.date, end: dt.date) -> pl.DataFrame:
        return LocalFilesSource(root=str(self.folder())).fetch(dataset, start, end)

    def coverage(self, dataset: RawDataset) -> tuple[dt.date, dt.date]:
        """First and last trade date the sample holds for `dataset`."""
        end = dt.date.fromisoformat(self.end)
        sessions = {"bars": self.intraday_sessions, "definition": self.intraday_sessions}
        if not dataset.intraday:
            return max(dataset.start, self.config().start), end
        count = sessions.get(dataset.kind, self.tick_sessions)
        days = settlement_days(end - dt.timedelta(days=2 * count + 14), end)
        return days[-count], days[-1]
