"""Replay: recorded records through the live service's own callback, in the order a live feed sends them.

A live feed sends each tick when it is received (`ts_recv`) and a 1-minute bar when its minute closes,
so the records of several files are merged on that time (a bar after the ticks of the same instant).
The records come from DBN files (Databento downloads, the embedded sample's files) or from a session
stored in the lake's raw layer.
"""

from __future__ import annotations

import datetime as dt
import heapq
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import databento_dbn as dbn

from cbi_assets.calendars import globex_session
from cbi_assets.lake import Lake
from cbi_assets.live.service import DATASETS, MINUTES
from cbi_assets.raw.dbn import open_dbn, records_from_frame

MINUTE_NS = 60 * 1_000_000_000


def sent_at(record) -> int:
    """When a live feed sends the record (ns): a bar at its minute's close, a tick when received."""
    if isinstance(record, dbn.OHLCVMsg):
        return record.ts_event + MINUTE_NS
    return record.ts_recv


def _ordered(streams: list[Iterable], keep: Callable[[int], bool]) -> Iterator:
    def keyed(records: Iterable, rank: int):
        for record in records:
            at = sent_at(record)
            if keep(at):
                yield at, 1 if isinstance(record, dbn.OHLCVMsg) else 0, rank, record

    return (item[-1] for item in heapq.merge(*(keyed(s, i) for i, s in enumerate(streams))))


def _window(day: dt.date | None) -> Callable[[int], bool]:
    if day is None:
        return lambda at: True
    opens, closes = (int(t.timestamp()) * 1_000_000_000 for t in globex_session(day))
    return lambda at: opens < at <= closes + MINUTE_NS


def dbn_files(paths: list[Path], day: dt.date | None = None) -> tuple[dict[int, str], Iterator]:
    """({instrument_id: symbol} from the files' mappings, the records of the session `day` (every record
    when None) in the order a live feed sends them). Each file holds one schema, in time order."""
    stores = [open_dbn(Path(p), str(p)) for p in paths]
    symbols = {}
    for store in stores:
        for requested, intervals in store.mappings.items():
            for interval in intervals:
                symbols[int(interval["symbol"])] = requested
    return symbols, _ordered(stores, _window(day))


def lake_session(lake: Lake, day: dt.date) -> tuple[dict[int, str], Iterator]:
    """The same for a session stored in the lake's raw layer (the 1-minute bars, and the ticks where stored)."""
    streams, symbols = [], {}
    for schema, dataset in DATASETS.items():
        stored = lake.raw(dataset).read(day, day)
        if stored is None:
            continue
        frame = stored.collect()
        order = "ts_event" if schema == MINUTES else "ts_recv"
        frame = frame.sort(order, maintain_order=True)
        symbols |= dict(frame.select("instrument_id", "symbol").unique().iter_rows())
        records = records_from_frame(frame, schema)
        decoder = dbn.DBNDecoder(has_metadata=False)
        decoder.write(records.tobytes())
        streams.append(decoder.decode())
    if not streams:
        raise ValueError(f"the lake has no MES 1-minute records of the session {day}; ingest it first")
    return symbols, _ordered(streams, _window(None))


def replay(
    service, symbols: dict[int, str], records: Iterator, pace: float | None = None, progress=None, stopping=None
) -> int:
    """Feed `records` to `service.on_record` (at `pace` times the recorded speed, or as fast as possible
    when None) until they end or `stopping` (a threading.Event) is set; returns the records fed.
    `progress(n)` is called every 10,000 records."""
    service.symbols.update(symbols)
    began, first, n = time.monotonic(), None, 0
    for record in records:
        if stopping is not None and stopping.is_set():
            break
        if pace:
            at = sent_at(record)
            first = first if first is not None else at
            wait = (at - first) / 1e9 / pace - (time.monotonic() - began)
            if wait > 0:
                time.sleep(wait)
        service.on_record(record)
        n += 1
        if progress is not None and n % 10_000 == 0:
            progress(n)
    return n
