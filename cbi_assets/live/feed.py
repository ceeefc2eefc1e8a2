"""The Databento live feed: the real `databento.Live` client subscribed for the live service.

GLBX.MDP3, the continuous MES front (the symbol the batch ingest requests, so both store the same
records), `ohlcv-1m`, and the tick schemas (`trades`, `tbbo`, `mbp-10`) when the microstructure
features are fed live. The client reconnects by itself after a dropped connection; the minutes of the
gap are then taken from the historical API (`fill_gap`), or marked missing where it cannot serve them.
"""

from __future__ import annotations

import datetime as dt

import databento as db
import databento_dbn as dbn
import polars as pl

from cbi_assets.catalogue import DATABENTO_DATASET, FUTURES
from cbi_assets.features.inputs import MINUTE_DATASET
from cbi_assets.raw.dbn import records_from_frame

SYMBOL = FUTURES["MES"].continuous
TICK_SCHEMAS = ("trades", "tbbo", "mbp-10")


def subscribe(
    service, key: str, gateway: str | None, port: int | None, ticks: bool, on_gap, heartbeat_s: int = 30
) -> db.Live:
    """A started `databento.Live` client whose records go to `service.on_record`; `on_gap(start, end)` is
    called after a reconnection with the times of the last record before the drop and the first after."""
    options = {"gateway": gateway} if gateway else {}
    if port:
        options["port"] = port
    client = db.Live(key=key, reconnect_policy="reconnect", heartbeat_interval_s=heartbeat_s, **options)
    for schema in ("ohlcv-1m", *(TICK_SCHEMAS if ticks else ())):
        client.subscribe(dataset=DATABENTO_DATASET, schema=schema, stype_in="continuous", symbols=[SYMBOL])
    client.add_callback(service.on_record, lambda error: service.feed_error(error))
    client.add_reconnect_callback(lambda start, end: on_gap(_utc(start), _utc(end)))
    client.start()
    return client


def _utc(value) -> dt.datetime:
    return value.to_pydatetime().astimezone(dt.UTC) if hasattr(value, "to_pydatetime") else value


def gap_records(source, start: dt.datetime, end: dt.datetime) -> list:
    """The 1-minute bars of [start, end) from the historical API `source` (a DatabentoSource), as the
    records the live feed would have sent."""
    days = pl.select(pl.date_range(start.date() - dt.timedelta(days=1), end.date() + dt.timedelta(days=1))).to_series()
    frame = source.fetch(MINUTE_DATASET, days.min(), days.max())
    frame = frame.filter((pl.col("ts_event") >= start) & (pl.col("ts_event") < end)).sort("ts_event")
    if frame.is_empty():
        return []
    decoder = dbn.DBNDecoder(has_metadata=False)
    decoder.write(records_from_frame(frame, "ohlcv-1m").tobytes())
    return decoder.decode()
