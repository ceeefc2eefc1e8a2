"""The raw (bronze) datasets: one per source and symbol or series, derived from the catalogue."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import dagster as dg

from cbi_assets.catalogue import (
    FRED_SERIES,
    FUTURES,
    HISTORY_START,
    INTRADAY_SCHEMAS,
    YAHOO_TICKERS,
    Schema,
)

# Which source resource serves a dataset: futures (Databento), macro (FRED), history (Yahoo).
Role = Literal["futures", "macro", "history"]
# The shape of the records, which fixes the columns and the checks.
Kind = Literal["bars", "trades", "tbbo", "mbp-10", "definition", "observations"]
# Which days a dataset is expected to have a record on.
Calendar = Literal["settlement", "globex", "weekdays", "all_days", "month_starts"]


@dataclass(frozen=True)
class RawDataset:
    name: str
    area: Literal["shared", "ZL", "MES"]
    role: Role
    kind: Kind
    symbol: str  # futures symbol, FRED series id or Yahoo ticker
    title: str
    calendar: Calendar
    start: dt.date
    schema: Schema | None = None  # Databento schema, for futures
    negative_prices_possible: bool = False

    @property
    def key(self) -> dg.AssetKey:
        return dg.AssetKey([self.area.lower(), "raw", self.name])

    @property
    def source_key(self) -> str:
        """The resource that serves it: futures_source, macro_source or history_source."""
        return f"{self.role}_source"

    @property
    def intraday(self) -> bool:
        return self.calendar == "globex"

    @property
    def price_columns(self) -> tuple[str, ...]:
        if self.kind == "bars":
            return ("open", "high", "low", "close")
        if self.kind in ("trades", "tbbo"):
            return ("price",)
        return ()

    def describe(self) -> str:
        return f"{self.name} ({self.symbol})"


def _futures_datasets() -> list[RawDataset]:
    out: list[RawDataset] = []
    for fut in FUTURES.values():
        out.append(
            RawDataset(
                name=f"{fut.symbol.lower()}_ohlcv_1d",
                area=fut.area,
                role="futures",
                kind="bars",
                symbol=fut.symbol,
                title=f"{fut.name} daily bars, every listed contract ({fut.unit})",
                calendar="settlement",
                start=fut.listed,
                schema="ohlcv-1d",
                negative_prices_possible=fut.negative_prices_possible,
            )
        )
    mes = FUTURES["MES"]
    kinds: dict[Schema, Kind] = {
        "ohlcv-1m": "bars",
        "trades": "trades",
        "tbbo": "tbbo",
        "mbp-10": "mbp-10",
        "definition": "definition",
    }
    for schema in INTRADAY_SCHEMAS:
        out.append(
            RawDataset(
                name=f"mes_{schema.replace('-', '_')}",
                area="MES",
                role="futures",
                kind=kinds[schema],
                symbol="MES",
                title=f"{mes.name} {schema} records from CME Globex",
                calendar="globex",
                start=mes.listed,
                schema=schema,
            )
        )
    return out


def _fred_datasets() -> list[RawDataset]:
    calendars: dict[str, Calendar] = {"daily": "settlement", "weekly": "weekdays", "monthly": "month_starts"}
    return [
        RawDataset(
            name=f"fred_{s.series_id.lower()}",
            area="shared",
            role="macro",
            kind="observations",
            symbol=s.series_id,
            title=f"FRED {s.series_id}: {s.title} ({s.unit}, {s.frequency})",
            # The effective fed funds rate is published for every calendar day.
            calendar="all_days" if s.series_id == "DFF" else calendars[s.frequency],
            start=max(s.start, HISTORY_START),
        )
        for s in FRED_SERIES.values()
    ]


def _yahoo_datasets() -> list[RawDataset]:
    return [
        RawDataset(
            name=f"yahoo_{t.key}",
            area="shared",
            role="history",
            kind="bars",
            symbol=t.ticker,
            title=f"Yahoo {t.ticker}: {t.title}",
            # Currencies trade on US holidays; exchange-listed tickers follow the NYSE sessions.
            calendar="weekdays" if t.ticker.endswith("=X") else "settlement",
            start=HISTORY_START,
        )
        for t in YAHOO_TICKERS.values()
    ]


RAW_DATASETS: dict[str, RawDataset] = {d.name: d for d in (*_futures_datasets(), *_fred_datasets(), *_yahoo_datasets())}


def raw_dataset(name: str) -> RawDataset:
    try:
        return RAW_DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown raw dataset {name!r}; known: {', '.join(RAW_DATASETS)}") from None
