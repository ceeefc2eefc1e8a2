"""Writing a derived Parquet file so that a failed run leaves the previous one in place."""

from __future__ import annotations

from pathlib import Path

import polars as pl

# Derived tables are rebuilt often and read whole. zstd at level 1 writes them in four fifths of the
# time level 3 (the default) takes, for files 5% larger (measured on MES 1-minute master parts).
COMPRESSION = {"compression": "zstd", "compression_level": 1}


def write_frame(frame: pl.DataFrame, path: Path) -> None:
    """Write to a temporary name beside `path`, then rename it over `path` (atomic on one filesystem)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    incoming = path.with_name(f".{path.name}.incoming")
    frame.write_parquet(incoming, **COMPRESSION)
    incoming.replace(path)
