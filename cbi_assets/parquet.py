"""Writing a derived Parquet file so that a failed run leaves the previous one in place."""

from __future__ import annotations

from pathlib import Path

import polars as pl


def write_frame(frame: pl.DataFrame, path: Path) -> None:
    """Write to a temporary name beside `path`, then rename it over `path` (atomic on one filesystem)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    incoming = path.with_name(f".{path.name}.incoming")
    # Derived tables are rebuilt often and read whole, by every training and forecast. On MES
    # 1-minute master parts LZ4 wrote in 0.21 s what zstd took 0.26 s for at level 1 and 0.35 s at
    # level 3 (the default), and read back in half the time (0.05 s against 0.10 s), for files 17%
    # larger than at zstd level 1. The raw layer, written once and kept, stays zstd (raw/store.py).
    frame.write_parquet(incoming, compression="lz4")
    incoming.replace(path)
