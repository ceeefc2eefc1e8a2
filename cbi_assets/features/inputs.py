"""The inputs of the feature layers, from raw records (as stored in the lake or fetched from a source)."""

from __future__ import annotations

import polars as pl

from cbi_assets.catalogue import FRED_SERIES, FUTURES, MES, YAHOO_TICKERS, ZL, Market
from cbi_assets.features.bars import front_daily, minute_bars, splice
from cbi_assets.raw.datasets import RAW_DATASETS, RawDataset
from cbi_assets.raw.rolls import front_month

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
            out[key] = (
                records[name]
                .select(pl.col("ts_event").dt.date().alias("date"), pl.col(column).alias("value"))
                .sort("date")
            )
    return out


def minutes(raw_minutes: pl.DataFrame | None, mes: pl.DataFrame | None) -> pl.DataFrame | None:
    """The canonical 1-minute table, with the daily roll adjustment of MES."""
    if raw_minutes is None:
        return None
    return minute_bars(raw_minutes, mes.select("date", "adj") if mes is not None else None)


# --- Which raw datasets each input comes from ---------------------------------------------------

ZL_SYMBOLS = [s for s, f in FUTURES.items() if f.area == "ZL"]
MES_SYMBOLS = [s for s, f in FUTURES.items() if f.area == "MES"]


def daily_datasets(symbols: list[str]) -> list[RawDataset]:
    return [RAW_DATASETS[f"{s.lower()}_ohlcv_1d"] for s in symbols]


def series_datasets(keys: list[str] | None = None) -> list[RawDataset]:
    """The raw datasets of FRED series and Yahoo closes (all, or those of `keys`)."""
    return [RAW_DATASETS[name] for key, (name, _) in SERIES_DATASETS.items() if keys is None or key in keys]


TICK_DATASETS = [RAW_DATASETS[f"mes_{kind}"] for kind in TICKS]
MINUTE_DATASET = RAW_DATASETS["mes_ohlcv_1m"]


# --- From the lake ------------------------------------------------------------------------------


def read_many(lake, datasets: list[RawDataset]) -> dict[str, pl.DataFrame]:
    """The stored records of each dataset that has any, by dataset name (`lake` is the Lake)."""
    found = {d.name: lake.read_raw(d) for d in datasets}
    return {name: frame for name, frame in found.items() if frame is not None}


def daily_bars(lake, symbols: list[str]) -> dict[str, pl.DataFrame]:
    raw = read_many(lake, daily_datasets(symbols))
    return {s: raw[f"{s.lower()}_ohlcv_1d"] for s in symbols if f"{s.lower()}_ohlcv_1d" in raw}


def lake_ticks(lake) -> dict[str, pl.DataFrame | None]:
    return {kind: lake.read_raw(d) for kind, d in zip(TICKS, TICK_DATASETS, strict=True)}


def continuous_bars(lake, markets: tuple[Market, ...] = (ZL, MES)) -> dict[str, pl.DataFrame]:
    """Continuous front daily bars by lower-case symbol ("zl", "cl", "mes", ...) of the markets' layers (`lake` is
    the Lake)."""
    from cbi_assets import lake as tables

    out = {}
    for m in markets:
        frame = lake.read(tables.CONTINUOUS, market=m)
        for (symbol,), part in frame.partition_by("symbol", as_dict=True).items():
            out[symbol] = part.drop("symbol").sort("date")
    return out
