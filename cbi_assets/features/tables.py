"""Feature tables on disk: the Parquet table and its catalogue entries side by side."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from cbi_assets.features.master import Table
from cbi_assets.features.spec import FeatureSpec, catalogue_frame
from cbi_assets.parquet import sink_frame, write_frame


def catalogue_path(path: Path) -> Path:
    return path.with_name(path.name.replace(".parquet", ".catalogue.parquet"))


def write_table(table: Table, path: Path, name: str) -> None:
    """The table and its catalogue entries, each written atomically."""
    write_frame(table.frame, path)
    write_frame(catalogue_frame(table.specs, name), catalogue_path(path))


def stream_table(parts: Sequence[Callable[[], Table]], path: Path, name: str, take: Callable[[Table], None]) -> list[FeatureSpec]:
    """A table built part by part, in time order, and streamed into one Parquet file as write_table
    writes it; only a part or two is ever in memory. Each part is handed to `take` (the checks'
    profile, progress) as it is built. Returns the table's feature specs."""
    first = parts[0]()
    take(first)
    built = 0  # the last part built

    def deferred(i: int, build: Callable[[], Table]) -> Callable[[], pl.DataFrame]:
        def run() -> pl.DataFrame:
            nonlocal built
            # Polars calls the parts one after another in order; `take` relies on it.
            if built != i - 1:
                raise RuntimeError(f"{path}: part {i} was asked for after part {built}; parts must be built in order")
            part = build()
            if part.features != first.features:
                raise ValueError(f"{path}: part {i} has other features than part 0")
            take(part)
            built = i
            return part.frame

        return run

    later = [pl.defer(deferred(i, build), schema=first.frame.schema) for i, build in enumerate(parts) if i]
    sink_frame(pl.concat([first.frame.lazy(), *later]), path)
    write_frame(catalogue_frame(first.specs, name), catalogue_path(path))
    return first.specs


def read_table(path: Path) -> Table:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: feature table not built yet; materialize its asset first")
    frame = pl.read_parquet(path)
    entries = pl.read_parquet(catalogue_path(path))
    specs = [FeatureSpec(**{k: row[k] for k in ("name", "layer", "source", "timeframe", "window", "lag", "description")})
             for row in entries.iter_rows(named=True)]
    keys = tuple(c for c in frame.columns if c not in {s.name for s in specs})
    return Table(frame, specs, keys)
