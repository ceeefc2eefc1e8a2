"""Reading a folder of market data files (the layout of `shared/data/real`).

    daily/<SYMBOL>.csv         date,open,high,low,close,volume,open_interest (front month)
    fred/<SERIES>.csv          date,value (empty value: a missing observation)
    yahoo/<TICKER>.csv         date,open,high,low,close,adj_close,volume
    dbn/<DATASET>/*.dbn.zst    Databento downloads, found by the schema and symbols they hold

A file that cannot be read raises a RawDataError naming the file, line and column.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import polars as pl

from cbi_assets.raw.dbn import frame_from_store, open_dbn
from cbi_assets.raw.errors import RawDataError
from cbi_assets.raw.quality import SOURCE_LINE

DAILY_COLUMNS = ("date", "open", "high", "low", "close", "volume", "open_interest")
FRED_COLUMNS = ("date", "value")
YAHOO_COLUMNS = ("date", "open", "high", "low", "close", "adj_close", "volume")
MISSING_MARKERS = ("", ".")  # an empty cell, or FRED's "." for a day without an observation

# ZL.FUT, MES.v.0, ES.c.1 or a contract such as ESH1 / ZLZ24 -> the root symbol.
_CONTINUOUS = re.compile(r"^([A-Z0-9]+)\.(FUT|OPT|[cnv]\.\d+)$")
_CONTRACT = re.compile(r"^([A-Z0-9]+?)[FGHJKMNQUVXZ]\d{1,2}$")


def root_symbol(symbol: str) -> str:
    for pattern in (_CONTINUOUS, _CONTRACT):
        match = pattern.match(symbol)
        if match:
            return match[1]
    return symbol


def read_csv_table(path: Path, columns: tuple[str, ...], optional: tuple[str, ...] = ()) -> pl.DataFrame:
    """Parse a dated CSV strictly: ISO dates, numbers or empty cells, no repeated date.

    Returns `ts_event` (00:00 UTC of the date), the numeric columns in file order (an empty cell or FRED's
    "." is a missing value, a null), and each row's line in the file (quality.SOURCE_LINE), for errors.
    """
    if not path.is_file():
        raise RawDataError(f"{path}: file not found. Add it, or pick another source with CBI_SOURCE.")
    if path.stat().st_size == 0:
        raise RawDataError(
            f"{path}: the file is empty; it needs the header {','.join(columns)} and one row per date. "
            "Download it again, or remove it."
        )
    try:
        text = pl.read_csv(path, infer_schema=False)
    except Exception as exc:
        raise RawDataError(
            f"{path}: not a readable CSV ({type(exc).__name__}: {str(exc).splitlines()[0]}). It needs the header "
            f"{','.join(columns)} and one row per date; fix or download it again."
        ) from exc
    missing = [c for c in columns if c not in text.columns and c not in optional]
    if missing:
        raise RawDataError(
            f"{path}: missing column(s) {missing}; the header is {text.columns}, expected {list(columns)}"
        )
    lines = pl.int_range(2, text.height + 2, dtype=pl.UInt32).alias("line")  # line 1 is the header
    text = text.with_columns(lines)

    dates = pl.col("date").str.strptime(pl.Date, "%Y-%m-%d", strict=False)
    bad = text.filter(dates.is_null())
    if bad.height:
        _fail(path, "date", bad, "is not a date in YYYY-MM-DD form")
    parsed = text.with_columns(dates)
    repeated = parsed.filter(pl.col("date").is_duplicated())
    if repeated.height:
        shown = ", ".join(f"{d} (line {n})" for d, n in repeated.select("date", "line").head(6).iter_rows())
        raise RawDataError(f"{path}: the date(s) {shown} appear more than once; keep one row per date and ingest again")

    numeric = [c for c in columns if c != "date" and c in text.columns]
    for column in numeric:
        cell = pl.col(column).str.strip_chars()
        missing = cell.is_null() | cell.is_in(MISSING_MARKERS)
        value = pl.when(missing).then(None).otherwise(cell.cast(pl.Float64, strict=False))
        not_number = text.filter(~missing & value.is_null())
        if not_number.height:
            _fail(path, column, not_number, "is not a number")
        if column == "close":
            empty = text.filter(missing)
            if empty.height:
                _fail(path, column, empty, "is empty; every row needs a close")
        parsed = parsed.with_columns(value.alias(column))
    return parsed.select(
        pl.col("date").cast(pl.Datetime("ns")).dt.replace_time_zone("UTC").alias("ts_event"),
        *numeric,
        pl.col("line").alias(SOURCE_LINE),
    )


def _fail(path: Path, column: str, rows: pl.DataFrame, problem: str) -> None:
    shown = ", ".join(f"line {n}: {v!r}" for n, v in rows.select("line", column).head(6).iter_rows())
    more = f" and {rows.height - 6} more" if rows.height > 6 else ""
    raise RawDataError(
        f"{path}: column {column!r} {problem} at {shown}{more}. Fix the file and ingest again; nothing was written."
    )


@lru_cache(maxsize=64)
def _dbn_index(folder: str, stamp: tuple) -> dict[tuple[str, str], list[Path]]:
    index: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(Path(folder).glob("*.dbn.zst")):
        store = open_dbn(path, str(path))
        roots = {root_symbol(s) for s in store.symbols} or {root_symbol(s) for s in store.mappings}
        for root in roots:
            index.setdefault((str(store.schema), root), []).append(path)
    return index


def dbn_files(folder: Path, schema: str, symbol: str) -> list[Path]:
    """The DBN files in `folder` holding `schema` records of `symbol` (any of its contracts)."""
    if not folder.is_dir():
        return []
    # Re-index when a file is added, removed or rewritten.
    stamp = tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.glob("*.dbn.zst")))
    return _dbn_index(str(folder), stamp).get((schema, symbol), [])


def read_dbn_files(paths: list[Path]) -> pl.DataFrame:
    frames = [frame_from_store(open_dbn(path, str(path)), str(path)) for path in paths]
    return pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
