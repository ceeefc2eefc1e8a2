"""The bars a live session holds in memory, and the intraday master rows of every bar that closes.

The rows come from the batch layer's own functions (`minute_bars`, `resample`, `microstructure_table`,
`higher_table`, `intraday_master`) applied to the tail of history each row depends on, so a live row is
the row the evening graph computes for the same bar, to float tolerance: every window of the
technicals is shorter than the tail, and the exponential averages forget where the tail starts to 1e-7
(the same argument that lets the batch tables be built in parts, `features.master.WARMUP_BARS`).

Held per timeframe: the bars of the earlier sessions the batch table warms up on (`warmup_sessions`), the higher
timeframes' technicals (recomputed only when one of their bars closes), and today's raw minutes, from
which today's bars are resampled at each closed minute (a session has at most 1,380 of them).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from cbi_assets.catalogue import INTRADAY_TIMEFRAMES
from cbi_assets.features.bars import minute_bars, resample
from cbi_assets.features.equity_calendar import calendar_table
from cbi_assets.features.master import (
    MICRO_WARMUP_ROWS,
    IntradayContext,
    Table,
    higher_table,
    intraday_master,
    keyed_micro,
    microstructure_table,
    settled_columns,
    warmup_bars,
    warmup_sessions,
)

# Bars of each timeframe kept from earlier sessions: the longest dependence, and a margin.
TAIL_BARS = warmup_bars() + 60
# Minutes of ticks kept: the microstructure's warmup, and the minute being closed.
TICK_MINUTES = MICRO_WARMUP_ROWS + 2


def _sessions_tail(bars: pl.DataFrame, timeframe: str) -> pl.DataFrame:
    """The bars of the last `warmup_sessions` sessions: what the batch table computes a session's rows
    after (whole sessions: a session feature such as the opening range stands until the next one forms)."""
    days = bars["trade_date"].unique().sort()
    first = days[max(len(days) - warmup_sessions(timeframe), 0)] if len(days) else None
    return bars if first is None else bars.filter(pl.col("trade_date") >= first)


@dataclass(frozen=True)
class ClosedBar:
    """A bar of `timeframe` that closed at `ts`: its master row and its (unadjusted) close price."""

    timeframe: str
    ts: dt.datetime
    row: pl.DataFrame
    close: float


class LiveWindow:
    """The canonical minutes of earlier sessions and of today, and the master rows of closed bars.

    raw_history: the raw `mes_ohlcv_1m` records of earlier sessions (a few hundred sessions at most are
                 read: enough for `TAIL_BARS` 4-hour bars); adj_by_day: the MES roll adjustment per
                 session (`date`, `adj`, from the continuous daily bars); mes_daily: the MES daily master
                 (its settled columns are joined as of each bar's close).
    """

    def __init__(self, raw_history: pl.DataFrame | None, adj_by_day: pl.DataFrame | None, mes_daily: Table):
        self.adj_by_day = adj_by_day
        self.settled, self.settled_specs = settled_columns(mes_daily)
        self.history: dict[str, pl.DataFrame] = {}
        self.higher: dict[str, tuple[pl.DataFrame, list]] = {}
        self.today: dt.date | None = None
        self.raw_today: list[pl.DataFrame] = []
        self.ticks: dict[str, list[pl.DataFrame]] = {"trades": [], "tbbo": [], "mbp_10": []}
        self.closed: dict[str, dt.datetime | None] = dict.fromkeys(INTRADAY_TIMEFRAMES)
        self._set_history(minute_bars(raw_history, adj_by_day) if raw_history is not None else None)

    def _set_history(self, minutes: pl.DataFrame | None) -> None:
        for timeframe in INTRADAY_TIMEFRAMES:
            bars = _sessions_tail(resample(minutes, timeframe), timeframe) if minutes is not None else None
            self.history[timeframe] = bars
            if bars is not None and not bars.is_empty():
                self.closed[timeframe] = bars["ts"][-1]
        for timeframe in INTRADAY_TIMEFRAMES[1:]:
            if self.history[timeframe] is not None:
                self.higher[timeframe] = higher_table(self.history[timeframe], timeframe)

    # --- What arrives ---------------------------------------------------------------------------

    def add_minutes(self, raw: pl.DataFrame, day: dt.date) -> None:
        """Raw 1-minute records of the session `day` (in any order; the caller dropped duplicates)."""
        if self.today is not None and day > self.today:
            self._roll_to(day)
        self.today = self.today or day
        self.raw_today.append(raw)

    def catch_up(self, raw: pl.DataFrame, day: dt.date, until: dt.datetime) -> list[ClosedBar]:
        """Today's 1-minute records before `until` (a restart, or a replay of a session's end), held as if
        received (give the ticks before them first): the master rows of every bar they closed, so the next
        bar is the first to close and the forecasts' history holds today's earlier rows."""
        self.add_minutes(raw, day)
        return self.close(until)

    def add_ticks(self, kind: str, frame: pl.DataFrame) -> None:
        """Decoded tick records of `kind` (trades, tbbo, mbp_10)."""
        self.ticks[kind].append(frame)

    def _roll_to(self, day: dt.date) -> None:
        """A new session: today's bars join the history."""
        today = self._minutes_today()
        for timeframe in INTRADAY_TIMEFRAMES:
            bars = resample(today, timeframe)
            stored = self.history[timeframe]
            self.history[timeframe] = _sessions_tail(
                pl.concat([stored, bars]) if stored is not None else bars, timeframe
            )
        self.today, self.raw_today = day, []

    # --- What closes ----------------------------------------------------------------------------

    def _minutes_today(self) -> pl.DataFrame:
        raw = pl.concat(self.raw_today, how="vertical_relaxed") if len(self.raw_today) > 1 else self.raw_today[0]
        self.raw_today = [raw]
        adj = None
        if self.adj_by_day is not None:
            # The session's own adjustment once it is known, else the last one: what the batch table's
            # forward fill gives a session the continuous bars do not have yet.
            known = self.adj_by_day.filter(pl.col("date") <= self.today).tail(1)
            adj = known.with_columns(pl.lit(self.today).alias("date")) if known.height else None
        return minute_bars(raw, adj)

    def close(self, until: dt.datetime) -> list[ClosedBar]:
        """The master rows of every bar that closed by `until` (a minute's close) and has not closed
        before, higher timeframes first; [] when nothing new closed."""
        if not self.raw_today:
            return []
        minutes = self._minutes_today()
        bars, due = {}, {}
        for timeframe in INTRADAY_TIMEFRAMES:
            today = resample(minutes, timeframe)
            stored = self.history[timeframe]
            bars[timeframe] = pl.concat([stored, today]) if stored is not None else today
            last = self.closed[timeframe]
            new = today.filter((pl.col("ts") <= until) & (pl.col("ts") > last if last is not None else True))
            if not new.is_empty():
                due[timeframe] = new
        if not due:
            return []
        # A higher bar that closed now is joined into the rows of the lower timeframes closing with it.
        for timeframe in INTRADAY_TIMEFRAMES[1:]:
            if timeframe in due or timeframe not in self.higher:
                closed = bars[timeframe].filter(pl.col("ts") <= until).tail(TAIL_BARS)
                self.higher[timeframe] = higher_table(closed, timeframe)
        first = min(new["ts"].min() for new in due.values())
        micro = self._micro(bars["1min"], until, first)
        dates = bars["1min"]["trade_date"].unique().sort()
        out = []
        for timeframe in reversed(INTRADAY_TIMEFRAMES):
            if timeframe not in due:
                continue
            closed = bars[timeframe].filter(pl.col("ts") <= until)
            context = IntradayContext(
                {timeframe: closed}, micro, self.higher, self.settled, self.settled_specs, calendar_table(dates)
            )
            table = intraday_master(context, timeframe)
            rows = table.frame.filter(pl.col("ts").is_in(due[timeframe]["ts"].implode()))
            for i, ts in enumerate(rows["ts"]):
                close = closed.filter(pl.col("ts") == ts)["close"][0]
                out.append(ClosedBar(timeframe, ts, rows.slice(i, 1), float(close)))
            self.closed[timeframe] = due[timeframe]["ts"][-1]
        return out

    def _micro(self, minutes: pl.DataFrame, until: dt.datetime, first: dt.datetime) -> Table | None:
        """The microstructure features of the minutes closing from `first` to `until`, each after the
        minutes its windows reach back to, over the ticks held (null without)."""
        closed = minutes.filter(pl.col("ts") <= until)
        # From TICK_MINUTES - 1 minutes before `first`: the windows of its features reach back that far.
        tail = closed.slice(max(closed["ts"].search_sorted(first, side="left") - TICK_MINUTES + 1, 0))
        start = tail["ts_event"][0]
        ticks = {}
        for kind, frames in self.ticks.items():
            if not frames:
                ticks[kind] = None
                continue
            frame = pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]
            # Keep what the next minutes need; a minute's ticks count by their receipt time.
            frame = frame.filter(pl.col("ts_recv") >= start - dt.timedelta(minutes=1))
            self.ticks[kind] = [frame]
            ticks[kind] = frame
        every_kind = all(v is not None for v in ticks.values())
        return keyed_micro(
            microstructure_table(tail, ticks["trades"], ticks["tbbo"], ticks["mbp_10"])
            if every_kind
            else microstructure_table(tail, None, None, None)
        )
