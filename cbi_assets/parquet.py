"""Writing a derived Parquet file so that a failed run leaves the previous one in place."""

from __future__ import annotations

from pathlib import Path

import polars as pl


def write_frame(frame: pl.DataFrame, path: Path) -> None:
    """Write to a temporary name beside `path`, then rename it over `path` (atomic on one filesystem)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    incoming = path.with_name(f".{path.name}.incoming")
    frame.write_parquet(incoming, compression="zstd")
    incoming.replace(path)
