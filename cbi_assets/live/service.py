"""The live MES service: records in, bronze and forecasts out, one closed minute at a time.

Every record the feed delivers goes through `LiveService.on_record`, live or replayed:
- it is kept for the raw layer (bronze), unless it is a duplicate (a 1-minute bar already received for
  the same minute and instrument, or a tick record received before byte for byte);
- a 1-minute bar closes its minute: the window computes the master rows of every bar that closed
  (`LiveWindow.close`), and each intraday horizon whose table gained a row forecasts it from the
  registered champion (or the regime's specialist), with intervals, conviction and confidence, appended
  to `predictions.history` as `pipeline = 'live'` in one write per minute;
- a bar older than the newest one received is late: it is stored and joins the bars of later
  forecasts, and the forecasts already made are not redone (they are what the desk saw).

`flush()` writes each session's records held to the raw layer through the batch ingest (a new version
of the day only when its content changed), so the evening ingest of the same records finds the day
unchanged; it runs every `flush_minutes`, at each session's close and when the service stops.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.calendars import globex_session, trade_date
from cbi_assets.catalogue import FUTURES, MES
from cbi_assets.features.inputs import MINUTE_DATASET, TICK_DATASETS, continuous_bars
from cbi_assets.lake import Lake, live_status, replacing
from cbi_assets.live.horizons import LiveHorizon
from cbi_assets.live.window import TAIL_BARS, TICK_MINUTES, LiveWindow
from cbi_assets.predictions import history
from cbi_assets.predictions.today import HorizonForecaster
from cbi_assets.raw.dbn import frame_from_records, record_dtype
from cbi_assets.raw.ingest import ingest
from cbi_assets.training.sets import feature_timeframe
from cbi_assets.warehouse import Warehouse

# The feed's schemas: the lake's raw dataset and the record type of each.
MINUTES = "ohlcv-1m"
DATASETS = {MINUTES: MINUTE_DATASET, **{d.schema: d for d in TICK_DATASETS}}
TICK_KINDS = {"trades": "trades", "tbbo": "tbbo", "mbp-10": "mbp_10"}  # schema -> the window's name
SCHEMA_OF = {
    dbn.OHLCVMsg: MINUTES,
    dbn.TradeMsg: "trades",
    dbn.MBP1Msg: "tbbo",
    dbn.MBP10Msg: "mbp-10",
}
ORIGIN = f"Databento live {FUTURES['MES'].continuous}"
MINUTE = dt.timedelta(minutes=1)


def _nanos(ts: dt.datetime) -> int:
    return int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1_000


def _utc(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns // 1_000_000_000, dt.UTC).replace(microsecond=(ns // 1_000) % 1_000_000)


def _day_of(ns: int) -> dt.date:
    return pl.select(trade_date(pl.lit(_utc(ns)))).item()


@dataclass
class Counts:
    """What the service received and did, for its status and the run log."""

    records: int = 0
    bars: int = 0
    duplicates: int = 0
    late: int = 0
    forecasts: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # horizon -> why it has no forecast
    # The latest closed bars' latencies (a day's worth): what the status's percentiles describe.
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=1_440))
    # The same bars' time in their features, their forecasts and the warehouse's write.
    stages_ms: deque = field(default_factory=lambda: deque(maxlen=1_440))


class LiveService:
    """One market's live path (MES): `on_record` for every record, `flush` and `stop` to write what is held.

    horizons: the loaded horizons by name (`load_horizons`); those that failed to load are in
    `counts.failed` and forecast nothing until a champion is registered that loads.
    """

    def __init__(
        self,
        lake: Lake,
        warehouse: Warehouse,
        window: LiveWindow,
        horizons: dict[str, LiveHorizon],
        failed: dict[str, str] | None = None,
        log=None,
        flush_minutes: int = 30,
        clock=None,
        pipeline: str = "live",
        load=None,
        champion_of=None,
        alert=None,
    ):
        self.lake, self.warehouse, self.window, self.horizons = lake, warehouse, window, horizons
        self.log = log
        self.flush_minutes = flush_minutes
        self.pipeline = pipeline  # how its forecasts are marked in predictions.history: live, or replay
        # For `reload`: a horizon's registered champion version, and a fresh LiveHorizon of it.
        self.load, self.champion_of = load, champion_of
        # alert(horizon, version, why): a champion that did not load (`build_service` sends it to monitoring.alerts).
        self.alert = alert or (lambda horizon, version, why: None)
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.counts = Counts(failed=dict(failed or {}))
        self.symbols: dict[int, str] = {}  # instrument_id -> the symbol subscribed (from the feed's mappings)
        self.held: dict[tuple[str, dt.date], list[bytes]] = defaultdict(list)  # (schema, session) -> records
        self.seen: dict[tuple[str, dt.date], set] = defaultdict(set)
        self.pending: dict[str, list[bytes]] = defaultdict(list)  # ticks not yet in the window
        self.stored: dict[tuple[str, dt.date], int] = {}  # records of each session written so far
        self.newest: dt.datetime | None = None  # the close of the newest minute received
        self.last_flush: dt.datetime | None = None
        self._views_ready = False
        self._lock = threading.RLock()
        self._flushing = threading.Lock()
        self.missing: list[tuple[dt.datetime, dt.datetime]] = []  # gaps neither the feed nor the history filled
        self.rows: dict[tuple[str, dt.date], list[pl.DataFrame]] = defaultdict(list)  # (timeframe, day) -> rows
        self.rows_stored: dict[tuple[str, dt.date], int] = {}

    # --- Records in -----------------------------------------------------------------------------

    def on_record(self, record) -> None:
        """Take one record of the feed (a databento_dbn record of any type)."""
        with self._lock:  # the feed's thread, a gap being filled and a stop never interleave
            self._on_record(record)

    def _on_record(self, record) -> None:
        arrived = time.perf_counter()
        if isinstance(record, dbn.SymbolMappingMsg):
            self.symbols[record.instrument_id] = record.stype_in_symbol
            return
        schema = SCHEMA_OF.get(type(record))
        if schema is None:
            if isinstance(record, dbn.ErrorMsg):
                self._say(f"the feed reports an error: {record.err}", warning=True)
            return  # system messages (heartbeats) carry nothing to store
        if schema == MINUTES and record.rtype != dbn.RType.OHLCV_1M:
            return
        raw = bytes(record)
        day = _day_of(record.ts_event)
        key = (record.ts_event, record.instrument_id) if schema == MINUTES else hash(raw)
        if key in self.seen[(schema, day)]:
            self.counts.duplicates += 1
            return
        self.seen[(schema, day)].add(key)
        self.held[(schema, day)].append(raw)
        self.counts.records += 1
        if schema != MINUTES:
            self.pending[TICK_KINDS[schema]].append(raw)
            return
        self._on_minute(raw, day, arrived)

    def _decode(self, schema: str, raws: list[bytes]) -> pl.DataFrame:
        records = np.frombuffer(b"".join(raws), dtype=record_dtype(schema))
        frame = frame_from_records(records, schema)
        symbol = frame["instrument_id"].replace_strict(self.symbols, default=None, return_dtype=pl.String)
        return frame.with_columns(symbol.alias("symbol"))

    def _on_minute(self, raw: bytes, day: dt.date, arrived: float) -> None:
        bar = self._decode(MINUTES, [raw])
        closes = bar["ts_event"][0] + MINUTE
        if self.newest is not None and closes <= self.newest:
            self.counts.late += 1
            self._say(f"a late 1-minute bar for {closes - MINUTE:%Y-%m-%d %H:%M} UTC: stored, no forecast redone")
        self.window.add_minutes(bar, day)
        for kind in list(self.pending):
            if self.pending[kind]:
                schema = next(s for s, k in TICK_KINDS.items() if k == kind)
                self.window.add_ticks(kind, self._decode(schema, self.pending.pop(kind)))
        if self.newest is None or closes > self.newest:
            self.newest = closes
        closed = self.window.close(self.newest)
        featured = time.perf_counter()
        self.counts.bars += 1
        frames = []
        for bar_closed in closed:
            for live in self.horizons.values():
                if feature_timeframe(live.horizon) != bar_closed.timeframe:
                    continue
                if not live.rows.append(bar_closed.row):
                    continue
                try:
                    frames.append(live.forecast(bar_closed.close))
                    self.counts.failed.pop(live.horizon.name, None)
                except Exception as error:  # one horizon's failure leaves the others forecasting
                    self.counts.failed[live.horizon.name] = f"{type(error).__name__}: {error}"
                    self._say(f"{live.horizon.name} could not forecast {bar_closed.ts}: {error}", warning=True)
        for bar_closed in closed:
            self.rows[(bar_closed.timeframe, bar_closed.row["trade_date"][0])].append(bar_closed.row)
        if frames:
            forecast = time.perf_counter()
            self._publish(frames)
            written = time.perf_counter()
            self.counts.latencies_ms.append((written - arrived) * 1000)
            self.counts.stages_ms.append(
                tuple(1000 * (b - a) for a, b in pairwise((arrived, featured, forecast, written)))
            )
        self.write_status()
        self._maybe_flush(closes, closes >= globex_session(day)[1])

    def _publish(self, frames: list[pl.DataFrame]) -> None:
        rows = pl.concat(frames, how="diagonal_relaxed").with_columns(
            pl.lit(self.clock()).cast(pl.Datetime("us", "UTC")).alias("published_at"),
            pl.lit(None, pl.String).alias("dagster_run_id"),
            pl.lit(self.pipeline).alias("pipeline"),
        )
        self.counts.forecasts += history.append(self.warehouse, rows)
        if not self._views_ready:  # the views gain the live columns once (PostgreSQL fixes a view's columns)
            for horizon in self.horizons:
                history.refresh_view(self.warehouse, MES, horizon)
            self._views_ready = True

    # --- Records out ----------------------------------------------------------------------------

    def flush(self, everything: bool = True) -> dict[str, list[str]]:
        """Write every session's records held to the raw layer (only the 1-minute bars unless `everything`:
        the ticks of a day are many, written at its close and at a stop), and the live rows; {dataset:
        [outcome per session]}. The records are taken under the service's lock, and written without holding
        it: the feed goes on meanwhile. One flush runs at a time."""
        with self._flushing:
            with self._lock:
                records = {
                    k: list(v)
                    for k, v in self.held.items()
                    if self.stored.get(k) != len(v) and (everything or k[0] == MINUTES)
                }
                rows = {k: list(v) for k, v in self.rows.items() if self.rows_stored.get(k) != len(v)}
                self.last_flush = self.newest
            outcomes: dict[str, list[str]] = defaultdict(list)
            now = self.clock()
            for (schema, day), raws in sorted(records.items(), key=lambda item: (item[0][1], item[0][0])):
                dataset = DATASETS[schema]
                report, height = self._store(dataset, schema, day, raws, now)
                outcome = "new" if report.new else "revised" if report.revised else "unchanged"
                outcomes[dataset.name].append(f"{day}: {outcome} ({height} records)")
                self.stored[(schema, day)] = len(raws)
            for (timeframe, day), frames in rows.items():
                parts = {"timeframe": timeframe, "day": day}
                day_rows = pl.concat(frames)
                if self.lake.exists(tables.LIVE_FEATURES, **parts):
                    # What an earlier run of the service that day wrote (a restart) stays beside these rows.
                    stored = self.lake.read(tables.LIVE_FEATURES, **parts)
                    day_rows = pl.concat([stored, day_rows]).unique("ts", keep="last")
                self.lake.write(tables.LIVE_FEATURES, day_rows.sort("ts"), **parts)
                self.rows_stored[(timeframe, day)] = len(frames)
        if outcomes:
            self._say(f"raw layer: {json.dumps(outcomes)}")
        return dict(outcomes)

    def _store(self, dataset, schema: str, day: dt.date, raws: list[bytes], now: dt.datetime):
        """One session's records through the batch ingest, as the union with what the day already holds."""
        store = self.lake.raw(dataset)
        frame = self._decode(schema, raws)
        before = store.read(day, day)
        if before is not None:
            # What an earlier run of the service (or the batch ingest) stored stays: the day is their union.
            frame = pl.concat([before.collect().drop("ingested_at"), frame], how="vertical_relaxed").unique(
                maintain_order=True
            )
        order = "ts_recv" if "ts_recv" in frame.columns and schema != MINUTES else "ts_event"
        frame = frame.sort(order, maintain_order=True)
        return ingest(dataset, frame, store, day, day, origin=ORIGIN, received_at=now), frame.height

    def _maybe_flush(self, closes: dt.datetime, session_closed: bool) -> None:
        """Every `flush_minutes` of the feed's time, and at a session's last minute, in the background."""
        if self.last_flush is None:
            self.last_flush = closes
            return
        due = session_closed or closes - self.last_flush >= dt.timedelta(minutes=self.flush_minutes)
        if due and not self._flushing.locked():
            self.last_flush = closes
            flush = threading.Thread(target=self.flush, args=(session_closed,), name="cbi-live-flush", daemon=True)
            flush.start()

    def reload(self) -> list[str]:
        """Swap in each horizon whose registered champion changed (or that had none, and has one now), by
        the service's `champion_of(horizon)` (its registered version, None without one) and `load(horizon)`
        (a fresh LiveHorizon). The loading runs while the feed goes on; the swap takes the rows of the bars
        closed since. Returns the horizons swapped."""
        swapped = []
        for horizon in (h for h in MES.horizons if h.intraday):
            held = self.horizons.get(horizon.name)
            version = self.champion_of(horizon)
            if version is None or (held is not None and held.version == version):
                continue
            try:
                fresh = self.load(horizon)
            except Exception as error:
                why = f"{type(error).__name__}: {error}"
                self.counts.failed[horizon.name] = why
                self._say(f"{horizon.name}: the new champion {version} did not load ({error})", warning=True)
                self.alert(horizon.name, version, why)
                continue
            with self._lock:
                timeframe = feature_timeframe(horizon)
                closed = [row for (tf, _), rows in sorted(self.rows.items()) if tf == timeframe for row in rows]
                for row in sorted(closed, key=lambda r: r["ts"][0]):
                    fresh.rows.append(row)  # rows it stands on already are skipped
                self.horizons[horizon.name] = fresh
                self.counts.failed.pop(horizon.name, None)
                self._views_ready = False
            self._say(f"{horizon.name}: now forecasting with the champion {version}")
            swapped.append(horizon.name)
        return swapped

    def fill_gap(self, start: dt.datetime, end: dt.datetime, historical) -> int:
        """After a reconnection: the 1-minute bars of [start, end) from the historical API, through the same
        path as live records (ones already received are duplicates, dropped). When the API cannot serve them
        the minutes are marked missing and said so. Returns the bars taken."""
        from cbi_assets.live.feed import gap_records

        self._say(f"the feed reconnected: filling {start:%H:%M:%S}..{end:%H:%M:%S} UTC from the historical API")
        try:
            records = gap_records(historical, start, end)
        except Exception as error:
            self.missing.append((start, end))
            self._say(
                f"the minutes {start:%Y-%m-%d %H:%M}..{end:%H:%M} UTC are missing: the historical API did not serve "
                f"them ({type(error).__name__}: {error}); the evening ingest takes them in",
                warning=True,
            )
            return 0
        for record in records:
            self.on_record(record)
        return len(records)

    def feed_error(self, error: BaseException) -> None:
        """A record the service could not take (the feed's client goes on with the next one)."""
        self._say(f"a record could not be taken: {type(error).__name__}: {error}", warning=True)

    def stop(self) -> None:
        """Write everything held (records, live rows, status): nothing received is lost. A flush under way
        finishes first."""
        self.flush()
        with self._lock:
            self.write_status()

    def write_status(self) -> None:
        path = live_status(Path(self.lake.root))
        with self._lock, replacing(path) as incoming:
            incoming.write_text(json.dumps(self.status(), indent=1))

    def status(self) -> dict:
        """What a person (and the Dagster health check) reads of the service."""
        latencies = np.array(self.counts.latencies_ms) if self.counts.latencies_ms else None
        return {
            "pipeline": self.pipeline,
            "last_bar_close": self.newest.isoformat() if self.newest else None,
            "written_at": self.clock().isoformat(),
            "records": self.counts.records,
            "bars": self.counts.bars,
            "duplicates": self.counts.duplicates,
            "late": self.counts.late,
            "forecasts": self.counts.forecasts,
            "horizons": sorted(self.horizons),
            "failed": self.counts.failed,
            "p50_ms": round(float(np.percentile(latencies, 50)), 1) if latencies is not None else None,
            "p99_ms": round(float(np.percentile(latencies, 99)), 1) if latencies is not None else None,
            "missing": [f"{a.isoformat()}..{b.isoformat()}" for a, b in self.missing],
        }

    def _say(self, message: str, warning: bool = False) -> None:
        if self.log is not None:
            (self.log.warning if warning else self.log.info)(message)


# --- Building one from the lake ---------------------------------------------------------------------


def load_window(lake: Lake, until: dt.datetime | None = None) -> tuple[LiveWindow, list]:
    """The window over the lake, and the bars it caught up on: the stored 1-minute records of the sessions
    before `until` (all stored sessions by default) that the longest tail needs, the roll adjustment and the
    daily master; where `until` falls inside a session, that session's earlier records (and ticks) as if
    received, with the master rows of the bars they closed."""
    store = lake.raw(MINUTE_DATASET)
    days = store.days()
    today = _day_of(_nanos(until)) if until is not None else None
    if today is not None:
        days = [d for d in days if d < today]
    sessions = -(-TAIL_BARS * 240 // 1380) + 2  # sessions of 4-hour bars the tail holds, and a margin
    raw = store.read(days[-sessions:][0], days[-1]).collect().drop("ingested_at") if days else None
    mes = continuous_bars(lake, (MES,))["mes"]
    daily = lake.read_features(tables.MASTER, market=MES, timeframe="1d")
    window = LiveWindow(raw, mes.select("date", "adj"), daily)
    earlier = store.read(today, today) if today is not None else None
    if earlier is not None:
        earlier = earlier.filter(pl.col("ts_event") + MINUTE <= until).drop("ingested_at").collect()
    if earlier is not None and earlier.height:
        # Today's ticks before `until`: every caught-up minute's microstructure reads them.
        since = earlier["ts_event"].min() - dt.timedelta(minutes=TICK_MINUTES)  # into the session before
        _add_ticks(lake, window, [*days[-1:], today], since, until)
        return window, window.catch_up(earlier, today, until)
    if raw is not None and not raw.is_empty():
        # The ticks of the last minutes held: the next minutes' microstructure windows reach back to them.
        last = raw["ts_event"].max() + MINUTE
        _add_ticks(lake, window, days[-1:], last - dt.timedelta(minutes=TICK_MINUTES + 1), last)
    return window, []


def _add_ticks(lake: Lake, window: LiveWindow, days: list[dt.date], since: dt.datetime, until: dt.datetime) -> None:
    """The stored ticks of the sessions `days` received in [since, until), into the window."""
    for dataset in TICK_DATASETS:
        ticks = lake.raw(dataset).read(days[0], days[-1]) if days else None
        if ticks is not None:
            kept = ticks.filter(pl.col("ts_recv").is_between(since, until, closed="left")).drop("ingested_at")
            window.add_ticks(TICK_KINDS[dataset.schema], kept.collect())


def load_horizon(
    lake: Lake, tracking, horizon, budget, levels, min_scores, level, log, until: dt.datetime | None = None
) -> LiveHorizon:
    """One intraday horizon's champion and rows, standing on the master rows before `until` (all by default)."""
    forecaster = HorizonForecaster(lake, tracking, MES, horizon, budget, levels, min_scores, 0, log, level)
    master = lake.scan(tables.MASTER, market=MES, timeframe=feature_timeframe(horizon))
    if until is not None:
        master = master.filter(pl.col("ts") < until)
    return LiveHorizon(forecaster, master)


def load_horizons(load) -> tuple[dict, dict]:
    """({horizon: LiveHorizon} for every intraday MES horizon whose champion loads, {horizon: why not});
    `load(horizon)` is `load_horizon` with its other arguments given."""
    loaded, failed = {}, {}
    for horizon in (h for h in MES.horizons if h.intraday):
        try:
            loaded[horizon.name] = load(horizon)
        except Exception as error:  # the others go on; this one is reported
            failed[horizon.name] = f"{type(error).__name__}: {error}"
    return loaded, failed
