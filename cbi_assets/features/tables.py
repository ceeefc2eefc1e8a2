"""Feature tables on disk: the Parquet table and its catalogue entries side by side (where they lie is
the lake's to say: `cbi_assets.lake`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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

    The writer asks for a part only once it has encoded the one before, so one thread builds a part
    ahead while the writer encodes: building and encoding each leave a core idle part of the time.
    """
    first = parts[0]()
    take(first)
    built = 0  # the last part built

    def build(i: int) -> pl.DataFrame:
        nonlocal built
        # One thread builds the parts in the order they are asked for; `take` relies on it.
        if built != i - 1:
            raise RuntimeError(f"{name}: part {i} was asked for after part {built}; parts must be built in order")
        part = parts[i]()
        if part.features != first.features:
            raise ValueError(f"{name}: part {i} has other features than part 0")
        take(part)
        built = i
        return part.frame

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"build-{name}") as builder:
        ahead = {1: builder.submit(build, 1)} if len(parts) > 1 else {}

        def deferred(i: int) -> Callable[[], pl.DataFrame]:
            def run() -> pl.DataFrame:
                frame = (ahead.pop(i, None) or builder.submit(build, i)).result()
                if i + 1 < len(parts):
                    ahead[i + 1] = builder.submit(build, i + 1)
                return frame

            return run

        later = [pl.defer(deferred(i), schema=first.frame.schema) for i in range(1, len(parts))]
        try:
            sink(pl.concat([first.frame.lazy(), *later]))
        finally:
            for waiting in ahead.values():  # a failed write builds nothing further
                waiting.cancel()
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
