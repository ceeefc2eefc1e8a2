"""The lake: Parquet under `TrainingData/` (shared, ZL and MES layers)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from cbi_assets.raw.datasets import RawDataset
from cbi_assets.raw.store import PartitionStore


class Lake(dg.ConfigurableResource):
    root: str
    profile: str = "full"  # "sample": the small walk-forward plans that suit the embedded sample

    def path(self, *parts: str) -> Path:
        return Path(self.root).joinpath(*parts)

    def raw(self, dataset: RawDataset) -> PartitionStore:
        """The day partitions of a raw dataset: `<root>/<area>/raw/<name>/date=YYYY-MM-DD/`."""
        return PartitionStore(self.path(dataset.area, "raw", dataset.name))
