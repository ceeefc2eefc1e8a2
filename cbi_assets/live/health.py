"""The live service's health in Dagster: `mes/live/service` stands for the `cbi live` process, and two checks
read the status file it rewrites every closed minute (`lake.live_status`), every 5 minutes by a schedule.

The judging is plain functions of the status and the time (`bar_freshness`, `horizons_forecasting`); the checks
call them with the clock's time, or with `now` from their config (tests, a status file judged after the fact).
"""

# No `from __future__ import annotations`: Dagster reads the checks' config type from their annotations.
import datetime as dt
import json
from pathlib import Path

import dagster as dg
import polars as pl

from cbi_assets.calendars import globex_session, is_settlement_day, trade_date, trading_ends
from cbi_assets.catalogue import EXCHANGE_TIMEZONE
from cbi_assets.lake import Lake, live_status

LIVE_SERVICE = dg.AssetKey(["mes", "live", "service"])
START = "start it with `cbi live`"

live_service = dg.AssetSpec(
    LIVE_SERVICE,
    group_name="mes_live",
    kinds={"databento"},
    description="The live MES service, `cbi live`: a process outside Dagster that materializes nothing here. It "
    "writes the Databento feed's records to the raw layer (bronze), the live master rows, and a forecast of every "
    "intraday horizon at every closed bar to predictions.history (pipeline = 'live'); its checks read the status "
    "file it rewrites every closed minute.",
)


class LiveHealthConfig(dg.Config):
    """How old the last 1-minute bar may be during a session before the service counts as stalled, and the time
    to judge at (ISO 8601 with a zone; the clock's by default: for tests, or a status file judged later)."""

    max_bar_age_minutes: int = 5
    now: str | None = None

    def at(self) -> dt.datetime:
        if self.now is None:
            return dt.datetime.now(dt.UTC)
        when = dt.datetime.fromisoformat(self.now)
        if when.tzinfo is None:
            raise dg.Failure(f"live health config now={self.now!r} has no time zone; give it as e.g. ...T14:30Z")
        return when.astimezone(dt.UTC)


# --- The judging --------------------------------------------------------------------------------


def open_session(now: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
    """The Globex session (UTC open, and when it stops trading) trading at `now`, or None: the daily break
    (16:00-17:00 Chicago), a half day after its early halt, a weekend, or a trade date without a settlement
    (exchange holidays, including those with an early halt)."""
    day = pl.select(trade_date(pl.lit(now).cast(pl.Datetime("us", "UTC")))).item()
    if not is_settlement_day(day):
        return None
    opens, closes = globex_session(day)[0], trading_ends(day)
    return (opens, closes) if opens <= now < closes else None


def read_status(path: Path) -> dict | None:
    """The status the service last wrote, or None when it never ran on this lake."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:  # written by rename, so only a hand-edited file gets here
        raise dg.Failure(
            f"{path}: not the live service's JSON status ({error}); delete it and restart `cbi live`"
        ) from None


def _utc(text: str) -> dt.datetime:
    """A time of the status (ISO 8601; UTC when it names no zone)."""
    when = dt.datetime.fromisoformat(text)
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


def _minutes(since: str | None, now: dt.datetime) -> float | None:
    return None if since is None else round((now - _utc(since)).total_seconds() / 60, 1)


def status_metadata(status: dict | None, path: Path, now: dt.datetime) -> dict:
    """What a person reads of the status beside a check's verdict."""
    if status is None:
        return {"status_file": str(path)}
    return {
        "status_file": str(path),
        "last_bar_close": status.get("last_bar_close") or "none yet",
        "bar_age_minutes": _minutes(status.get("last_bar_close"), now),
        "written_at": status.get("written_at") or "never",
        "status_age_minutes": _minutes(status.get("written_at"), now),
        "bars": status.get("bars", 0),
        "forecasts": status.get("forecasts", 0),
        "horizons": dg.MetadataValue.json(status.get("horizons", [])),
        "failed_horizons": dg.MetadataValue.json(status.get("failed", {})),
        "missing": dg.MetadataValue.json(status.get("missing", [])),
        "late_bars": status.get("late", 0),
        "p50_ms": status.get("p50_ms"),  # None (shown as null) before the first forecast
        "p99_ms": status.get("p99_ms"),
    }


def bar_freshness(status: dict | None, path: Path, now: dt.datetime, max_age_minutes: int) -> dg.AssetCheckResult:
    """In a session: fails (ERROR) without a status file, or when the last bar closed more than `max_age_minutes`
    ago (counted from the session's open, so its first minutes are not judged on the last session's bars).
    Outside one it passes: the market is closed."""
    metadata = status_metadata(status, path, now)
    session = open_session(now)
    if session is None:
        return dg.AssetCheckResult(
            passed=True, description="the market is closed: no bars to expect", metadata=metadata
        )
    opens, _ = session
    if status is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"the session is open but the live service has never run on this lake (no {path}): {START}",
            metadata=metadata,
        )
    last = status.get("last_bar_close")
    since = max(_utc(last), opens) if last else opens
    age = (now - since).total_seconds() / 60
    if age <= max_age_minutes:
        return dg.AssetCheckResult(
            passed=True, description=f"the last bar closed at {last} ({age:.1f} min ago)", metadata=metadata
        )
    written = _minutes(status.get("written_at"), now)
    # The service rewrites its status every few seconds while it runs: an old one means the process is gone.
    if written is not None and written > max_age_minutes:
        why = f"the status was last written {written:.0f} min ago: `cbi live` is not running; {START}"
    else:
        why = "the service runs but the feed delivers no bars: see its log for the feed's errors and reconnections"
    if last and _utc(last) >= opens:
        shown = f"the last bar closed at {last}, {age:.0f} min ago"
    else:
        shown = f"no bar since the session opened {age:.0f} min ago" + (f" (the last closed at {last})" if last else "")
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{shown}, more than the {max_age_minutes} allowed during the session: {why}",
        metadata=metadata,
    )


def horizons_forecasting(status: dict | None, path: Path, now: dt.datetime) -> dg.AssetCheckResult:
    """Fails (WARN) when the status names horizons without a forecast (`failed`: a champion that did not load, or a
    forecast that raised); passes without a status file (`last_bar_is_fresh` says whether one is due)."""
    metadata = status_metadata(status, path, now)
    if status is None:
        return dg.AssetCheckResult(
            passed=True, description=f"no status at {path}: the live service has not run here", metadata=metadata
        )
    failed = status.get("failed") or {}
    if not failed:
        shown = ", ".join(status.get("horizons", [])) or "none"
        return dg.AssetCheckResult(passed=True, description=f"every horizon forecasts: {shown}", metadata=metadata)
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description="without live forecasts: "
        + "; ".join(f"{h}: {why}" for h, why in sorted(failed.items()))
        + ". Register a champion that loads (or fix the error): the service loads it within a minute, no restart",
        metadata=metadata,
    )


# --- The checks, their job and schedule ---------------------------------------------------------


@dg.asset_check(
    asset=LIVE_SERVICE,
    name="last_bar_is_fresh",
    blocking=False,
    description="During a Globex session (Sun-Fri 17:00-16:00 Chicago on settlement days; a half day until its "
    "early halt) the last 1-minute bar "
    "the service received closed at most max_bar_age_minutes (5) ago; fails (ERROR) when it is older or the "
    "status file is missing. Passes outside the session: the market is closed.",
)
def last_bar_is_fresh(config: LiveHealthConfig, lake: Lake) -> dg.AssetCheckResult:
    path = live_status(Path(lake.root))
    return bar_freshness(read_status(path), path, config.at(), config.max_bar_age_minutes)


@dg.asset_check(
    asset=LIVE_SERVICE,
    name="every_horizon_forecasts",
    blocking=False,
    description="No intraday horizon is without live forecasts (the status's `failed`: a champion that did not "
    "load, or a forecast that raised); fails with WARN severity, naming each horizon and why. Judged whenever a "
    "status file exists, in session or not: a missing model is to be fixed before the next session.",
)
def every_horizon_forecasts(config: LiveHealthConfig, lake: Lake) -> dg.AssetCheckResult:
    path = live_status(Path(lake.root))
    return horizons_forecasting(read_status(path), path, config.at())


LIVE_CHECKS = [last_bar_is_fresh, every_horizon_forecasts]

live_health = dg.define_asset_job(
    "mes_live_health",
    selection=dg.AssetSelection.checks(*LIVE_CHECKS),
    description="The live MES service's checks: its last bar is fresh during a session, and every horizon forecasts.",
)

live_health_schedule = dg.ScheduleDefinition(
    name="mes_live_health",
    job=live_health,
    cron_schedule="*/5 * * * *",
    execution_timezone=EXCHANGE_TIMEZONE,
    description="Every 5 minutes: the live MES service's checks (they pass outside the session).",
)
