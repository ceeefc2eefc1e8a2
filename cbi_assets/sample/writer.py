"""Writing the sample in the local-files layout: DBN files, CSVs, and a folder that appears whole.

dbn/GLBX.MDP3/{SYM}.FUT.ohlcv-1d.dbn.zst       daily bars of the two nearest contracts
dbn/GLBX.MDP3/MES.v.0.{ohlcv-1m,trades,tbbo,mbp-10}.dbn.zst
dbn/GLBX.MDP3/MES.FUT.definition.dbn.zst
fred/{SERIES}.csv                               date,value
yahoo/{TICKER}.csv                              date,open,high,low,close,adj_close,volume
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from cbi_assets.catalogue import DATABENTO_DATASET, Future
from cbi_assets.raw.dbn import empty_records, encode
from cbi_assets.sample.sessions import (
    NS_PER_DAY,
    NS_PER_MINUTE,
    SESSION_MINUTES,
    globex_open_ns,
    midnight_ns,
)

PRICE_UNIT = 1_000_000_000  # DBN fixed-point prices: value * 1e9
Interval = tuple[str, str, int]


def tick_fixed(tick_size: float) -> int:
    """One tick in DBN fixed-point units; exact, since ticks are decimal fractions."""
    return round(tick_size * PRICE_UNIT)


def dbn_path(folder: Path, symbol: str, schema: str) -> Path:
    return folder / "dbn" / DATABENTO_DATASET / f"{symbol}.{schema}.dbn.zst"


def _write_dbn(
    path: Path,
    records: np.ndarray,
    *,
    schema: str,
    symbol: str,
    stype_in: str,
    mappings: list[Interval],
    span_ns: tuple[int, int],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = encode(
        records,
        schema=schema,
        dataset=DATABENTO_DATASET,
        symbols=[symbol],
        stype_in=stype_in,
        start_ns=span_ns[0],
        end_ns=span_ns[1],
        mappings={symbol: mappings},
    )
    path.write_bytes(data)


def _bar_records(schema: str, ts_event: np.ndarray, bars: pl.DataFrame, one_tick: int) -> np.ndarray:
    """OHLCV records from bars in integer ticks."""
    records = empty_records(schema, bars.height)
    records["ts_event"] = ts_event
    records["instrument_id"] = bars["instrument_id"].to_numpy()
    for column in ("open", "high", "low", "close"):
        records[column] = bars[column].to_numpy().astype(np.int64) * one_tick
    records["volume"] = bars["volume"].to_numpy()
    return records


def contract_intervals(days: pl.Series, instrument_ids: pl.Series) -> list[Interval]:
    """Each instrument's first trade date to the day after its last (Databento's end is exclusive)."""
    spans = (
        pl.DataFrame({"date": days, "instrument_id": instrument_ids})
        .group_by("instrument_id")
        .agg(first=pl.col("date").min(), last=pl.col("date").max())
        .sort("first", "instrument_id")
    )
    return [
        (first.isoformat(), (last + dt.timedelta(days=1)).isoformat(), int(iid))
        for iid, first, last in spans.select("instrument_id", "first", "last").iter_rows()
    ]


def run_intervals(days: list[dt.date], instrument_ids: list[int]) -> list[Interval]:
    """A continuous symbol's mapping: one interval per run of the same front contract."""
    out: list[Interval] = []
    for day, iid in zip(days, instrument_ids, strict=False):
        end = (day + dt.timedelta(days=1)).isoformat()
        if out and out[-1][2] == iid:
            out[-1] = (out[-1][0], end, iid)
        else:
            out.append((day.isoformat(), end, iid))
    return out


def _sessions_span(days: list[dt.date]) -> tuple[int, int]:
    """From the first session's 17:00 open to the last session's 16:00 close, in UTC ns."""
    opens = globex_open_ns(np.array([days[0], days[-1]], dtype="datetime64[D]"))
    return int(opens[0]), int(opens[1]) + SESSION_MINUTES * NS_PER_MINUTE


def write_daily_bars(folder: Path, future: Future, bars: pl.DataFrame, first: dt.date, last: dt.date) -> None:
    """`{SYM}.FUT.ohlcv-1d`: every contract's bar at 00:00 UTC of its trade date, as a parent request."""
    days = bars["date"]
    _write_dbn(
        dbn_path(folder, future.parent, "ohlcv-1d"),
        _bar_records("ohlcv-1d", midnight_ns(days.to_numpy()), bars, tick_fixed(future.tick_size)),
        schema="ohlcv-1d",
        symbol=future.parent,
        stype_in="parent",
        mappings=contract_intervals(days, bars["instrument_id"]),
        span_ns=(
            int(midnight_ns(np.array([first], dtype="datetime64[D]"))[0]),
            int(midnight_ns(np.array([last], dtype="datetime64[D]"))[0]) + NS_PER_DAY,
        ),
    )


def write_minute_bars(folder: Path, future: Future, bars: pl.DataFrame, front: pl.DataFrame) -> None:
    """`MES.v.0.ohlcv-1m`: the front contract's minutes, as a continuous-symbol request."""
    days = front["date"].to_list()
    _write_dbn(
        dbn_path(folder, future.continuous, "ohlcv-1m"),
        _bar_records("ohlcv-1m", bars["ts_event"].to_numpy(), bars, tick_fixed(future.tick_size)),
        schema="ohlcv-1m",
        symbol=future.continuous,
        stype_in="continuous",
        mappings=run_intervals(days, front["instrument_id"].to_list()),
        span_ns=_sessions_span(days),
    )


def write_definitions(folder: Path, future: Future, records: np.ndarray, listed: pl.DataFrame) -> None:
    """`MES.FUT.definition`: the listed contracts of each session, as a parent request.

    `listed` holds the date and instrument_id of every contract defined on every session.
    """
    _write_dbn(
        dbn_path(folder, future.parent, "definition"),
        records,
        schema="definition",
        symbol=future.parent,
        stype_in="parent",
        mappings=contract_intervals(listed["date"], listed["instrument_id"]),
        span_ns=_sessions_span(listed["date"].unique().sort().to_list()),
    )


def write_ticks(folder: Path, future: Future, ticks: dict[str, np.ndarray], front: pl.DataFrame) -> None:
    """`MES.v.0.{trades,tbbo,mbp-10}` of the tick sessions; empty files when there are none."""
    days = front["date"].to_list()
    span = _sessions_span(days) if days else (0, 0)  # no sessions, no records
    for schema, records in ticks.items():
        _write_dbn(
            dbn_path(folder, future.continuous, schema),
            records,
            schema=schema,
            symbol=future.continuous,
            stype_in="continuous",
            mappings=run_intervals(days, front["instrument_id"].to_list()),
            span_ns=span,
        )


def write_csv(path: Path, frame: pl.DataFrame, decimals: int) -> None:
    """A CSV with ISO dates, fixed decimals and an empty field for a missing observation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(path, float_precision=decimals, null_value="", date_format="%Y-%m-%d")


@contextlib.contextmanager
def atomic_folder(folder: Path, marker: str) -> Iterator[Path]:
    """A staging folder beside `folder` that becomes it in one rename once the body succeeds.

    Readers never see a half-written sample. A folder without its `marker` file is an earlier
    build that never finished and is replaced; if another process completes `folder` first, its
    copy is kept and this one discarded.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if not (folder / marker).is_file():
            shutil.rmtree(folder, ignore_errors=True)
            try:
                os.rename(staging, folder)
            except OSError:
                if not (folder / marker).is_file():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
