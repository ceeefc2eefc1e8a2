"""Feature tables on disk: the Parquet table and its catalogue entries side by side (where they lie is
the lake's to say: `cbi_assets.lake`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from cbi_assets.features.master import Table
from cbi_assets.features.spec import FeatureSpec


def stream_table(
    parts: Sequence[Callable[[], Table]],
    sink: Callable[[pl.LazyFrame], object],
    name: str,
    take: Callable[[Table], None],
) -> list[FeatureSpec]:
    """A table built part by part, in time order, and streamed by `sink` into one Parquet file; only a
    few parts are ever in memory. Each part is handed to `take` (the checks' profile, progress) as it
    is built. Returns the table's feature specs (its catalogue entries are the caller's to write).

    The writer builds each part when it asks for it, one after the other: nothing runs beside it, so a
    failed part stops the write at once and leaves nothing behind (building the next part ahead on a
    thread of our own bought about 7% and made failures depend on timing).
    """
    first = parts[0]()
    take(first)

    def part(i: int) -> Callable[[], pl.DataFrame]:
        def build() -> pl.DataFrame:
            built = parts[i]()
            if built.features != first.features:
                raise ValueError(f"{name}: part {i} has other features than part 0")
            take(built)
            return built.frame

        return build

    later = [pl.defer(part(i), schema=first.frame.schema) for i in range(1, len(parts))]
    sink(pl.concat([first.frame.lazy(), *later], parallel=False))  # one part at a time, in order
    return first.specs


def read_table(path: Path, catalogue: Path) -> Table:
    """A stored feature table and its features' catalogue entries."""
    frame = pl.read_parquet(path)
    entries = pl.read_parquet(catalogue)
    specs = [
        FeatureSpec(**{k: row[k] for k in ("name", "layer", "source", "timeframe", "window", "lag", "description")})
        for row in entries.iter_rows(named=True)
    ]
    keys = tuple(c for c in frame.columns if c not in {s.name for s in specs})
    return Table(frame, specs, keys)
