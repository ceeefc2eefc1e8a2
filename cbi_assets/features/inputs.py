"""The inputs of the feature layers, from raw records (as stored in the lake or fetched from a source)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from cbi_assets.catalogue import FRED_SERIES, FUTURES, YAHOO_TICKERS
from cbi_assets.features.bars import front_daily, minute_bars, splice
from cbi_assets.raw.datasets import RAW_DATASETS
from cbi_assets.raw.rolls import front_month
from cbi_assets.raw.store import PartitionStore

SERIES_DATASETS = {
    **{series_id: (f"fred_{series_id.lower()}", "value") for series_id in FRED_SERIES},
    **{ticker: (f"yahoo_{t.key}", "close") for ticker, t in YAHOO_TICKERS.items()},
}
TICKS = ("trades", "tbbo", "mbp_10")


def continuous(daily_bars: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Continuous front daily bars by lower-case symbol from each symbol's raw daily bars.

    The front is chosen by the previous session's volume (raw.rolls); "mes" carries the
    E-mini's history before MES listed.
    """
    out = {}
    for symbol, bars in daily_bars.items():
        if bars.is_empty():
            continue
        contracts = "instrument_id" in bars.columns and bars["instrument_id"].null_count() < bars.height
        out[symbol.lower()] = front_daily(bars, front_month(bars) if contracts else None)
    if "es" in out:
        out["mes"] = splice(out["es"], out["mes"]) if "mes" in out else out["es"]
    return out


def series(records: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """FRED series and Yahoo closes as (`date`, `value`), by series id or ticker."""
    out = {}
    for key, (name, column) in SERIES_DATASETS.items():
        if name in records:
            out[key] = records[name].select(pl.col("ts_event").dt.date().alias("date"), pl.col(column).alias("value")).sort("date")
    return out


def minutes(raw_minutes: pl.DataFrame | None, mes: pl.DataFrame | None) -> pl.DataFrame | None:
    """The canonical 1-minute table, with the daily roll adjustment of MES."""
    if raw_minutes is None:
        return None
    return minute_bars(raw_minutes, mes.select("date", "adj") if mes is not None else None)


# --- From the lake ------------------------------------------------------------------------------


def read_raw(lake: Path, name: str, start: dt.date | None = None, end: dt.date | None = None) -> pl.DataFrame | None:
    """The latest stored records of a raw dataset, or None when nothing is stored."""
    dataset = RAW_DATASETS[name]
    stored = PartitionStore(Path(lake) / dataset.area / "raw" / dataset.name).read(start, end)
    return None if stored is None else stored.collect()


def read_many(lake: Path, names: list[str]) -> dict[str, pl.DataFrame]:
    found = {name: read_raw(lake, name) for name in names}
    return {name: frame for name, frame in found.items() if frame is not None}


def daily_bars(lake: Path, symbols: list[str]) -> dict[str, pl.DataFrame]:
    raw = read_many(lake, [f"{s.lower()}_ohlcv_1d" for s in symbols])
    return {s: raw[f"{s.lower()}_ohlcv_1d"] for s in symbols if f"{s.lower()}_ohlcv_1d" in raw}


def lake_series(lake: Path) -> dict[str, pl.DataFrame]:
    return series(read_many(lake, [name for name, _ in SERIES_DATASETS.values()]))


def lake_ticks(lake: Path) -> dict[str, pl.DataFrame | None]:
    return {kind: read_raw(lake, f"mes_{kind}") for kind in TICKS}


ZL_SYMBOLS = [s for s, f in FUTURES.items() if f.area == "ZL"]
MES_SYMBOLS = [s for s, f in FUTURES.items() if f.area == "MES"]
