"""Feature tables on disk: the Parquet table and its catalogue entries side by side."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cbi_assets.features.master import Table
from cbi_assets.features.spec import FeatureSpec, catalogue_frame
from cbi_assets.parquet import write_frame


def catalogue_path(path: Path) -> Path:
    return path.with_name(path.name.replace(".parquet", ".catalogue.parquet"))


def write_table(table: Table, path: Path, name: str) -> None:
    """The table and its catalogue entries, each written atomically."""
    write_frame(table.frame, path)
    write_frame(catalogue_frame(table.specs, name), catalogue_path(path))


def read_table(path: Path) -> Table:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: feature table not built yet; materialize its asset first")
    frame = pl.read_parquet(path)
    entries = pl.read_parquet(catalogue_path(path))
    specs = [FeatureSpec(**{k: row[k] for k in ("name", "layer", "source", "timeframe", "window", "lag", "description")})
             for row in entries.iter_rows(named=True)]
    keys = tuple(c for c in frame.columns if c not in {s.name for s in specs})
    return Table(frame, specs, keys)
