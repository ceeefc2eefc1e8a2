"""`cbi live`: the live service as a process, on the Databento feed or replaying recorded records.

Built from the same settings as every other command (the lake, the warehouse, MLflow, the profile).
SIGTERM or Ctrl-C stops the feed, then writes everything held to the raw layer and the status file.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from cbi_assets.calendars import globex_session
from cbi_assets.catalogue import MES
from cbi_assets.lake import Lake
from cbi_assets.live import feed, replay
from cbi_assets.live.service import LiveService, load_horizon, load_horizons, load_window
from cbi_assets.predictions.assets import ForecastConfig
from cbi_assets.profiles import load_profile
from cbi_assets.settings import Settings
from cbi_assets.training.sets import feature_timeframe
from cbi_assets.warehouse import Warehouse
from resources.alerts import alerts_from_env
from resources.tracking import Tracking

LOG = logging.getLogger("cbi.live")
RELOAD_SECONDS = 60  # how often the registry is asked whether a horizon's champion changed


def build_service(settings: Settings, until: dt.datetime | None = None, pipeline: str = "live") -> LiveService:
    """The service over the settings' lake, warehouse and MLflow, standing on what was stored before
    `until` (everything by default), marking its forecasts `pipeline`. A horizon whose champion does not load
    raises an alert and is left out."""
    lake = Lake(root=str(settings.lake))
    tracking = Tracking(tracking_uri=settings.tracking_uri, artifact_root=str(settings.models / "artifacts"))
    warehouse = Warehouse(database=settings.warehouse, url=settings.warehouse_url)
    profile, config = load_profile(settings.profile), ForecastConfig()
    LOG.info("loading the bars, the daily master and the intraday champions")
    window, caught_up = load_window(lake, until)

    def load(horizon):
        levels, significance = tuple(config.levels), profile.significance
        live = load_horizon(
            lake, tracking, horizon, profile.training, levels, config.min_scores, significance, LOG, until
        )
        for bar in caught_up:  # today's earlier bars, where the master table does not have them yet
            if bar.timeframe == feature_timeframe(horizon):
                live.rows.append(bar.row)
        return live

    alerts = alerts_from_env(warehouse)

    def alert(horizon: str, version: str | None, why: str) -> None:
        """A champion that did not load, at the start or at a reload: said once per version and day."""
        if version is None:
            said = f"MES {horizon}: no live forecast, no champion is registered ({why})"
        else:
            said = (
                f"MES {horizon}: its champion {version} did not load live ({why}); "
                "it forecasts with the model held before, if any"
            )
        alerts.send(
            "live",
            said,
            asset="MES",
            horizon=horizon,
            key=f"live-load:{horizon}:{version}:{dt.datetime.now(dt.UTC).date()}",
            log=LOG,
        )

    def champion_of(horizon):
        registered = tracking.champion(MES, horizon.name)
        return registered["model_version"] if registered else None

    horizons, failed = load_horizons(load)
    for horizon, why in failed.items():
        alert(horizon, champion_of(MES.horizon(horizon)), why)
    LOG.info(
        f"live horizons: {', '.join(horizons) or 'none'}"
        + (f"; without a model: {', '.join(failed)}" if failed else "")
    )
    return LiveService(
        lake,
        warehouse,
        window,
        horizons,
        failed,
        log=LOG,
        pipeline=pipeline,
        load=load,
        champion_of=champion_of,
        alert=alert,
    )


def _stop_on_signals() -> threading.Event:
    stopping = threading.Event()

    def stop(signum, frame):
        LOG.info(f"signal {signum}: stopping, then writing what is held")
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return stopping


def live(settings: Settings, gateway: str | None, port: int | None, ticks: bool) -> int:
    """Subscribe to the Databento live feed and run until stopped."""
    key = os.environ.get("DATABENTO_API_KEY")
    if not key:
        raise SystemExit("cbi live: set DATABENTO_API_KEY to your Databento key (or replay recorded records: --replay)")
    # Standing on the sessions before today's and on today's records stored so far (a restart mid-session).
    service = build_service(settings, dt.datetime.now(dt.UTC))
    stopping = _stop_on_signals()
    historical = _historical(key)
    client = feed.subscribe(
        service, key, gateway, port, ticks, lambda start, end: service.fill_gap(start, end, historical)
    )
    LOG.info(f"subscribed to {feed.SYMBOL} on {gateway or 'Databento'}; Ctrl-C or SIGTERM stops")
    try:
        checked = time.monotonic()
        while not stopping.is_set():
            stopping.wait(5)
            service.write_status()
            if time.monotonic() - checked >= RELOAD_SECONDS:  # a champion crowned since: served without a restart
                service.reload()
                checked = time.monotonic()
    finally:
        try:
            client.stop()
            client.block_for_close(timeout=30)
        except Exception as error:  # a feed already closed: what it delivered is held all the same
            LOG.warning(f"the feed did not close cleanly: {type(error).__name__}: {error}")
        service.stop()
    LOG.info(f"stopped: {json.dumps(service.status())}")
    return 0


def _historical(key: str):
    from resources.databento_source import DatabentoSource

    gateway = os.environ.get("CBI_DATABENTO_HISTORICAL")  # a gateway of your own (tests, a proxy)
    return DatabentoSource(api_key=key, **({"gateway": gateway} if gateway else {}))


def replay_command(
    settings: Settings, sources: list[str], day: dt.date | None, pace: float | None, last_minutes: int | None = None
) -> LiveService:
    """Replay DBN files (or, when `sources` is one date, that session of the lake) through the service; with
    `last_minutes`, only the session's last minutes, the earlier ones taken from the lake as already received."""
    if len(sources) == 1 and _is_date(sources[0]):
        day = dt.date.fromisoformat(sources[0])
        lake = Lake(root=str(settings.lake))
        symbols, records = replay.lake_session(lake, day)
    else:
        missing = [s for s in sources if not Path(s).is_file()]
        if missing:
            raise SystemExit(f"cbi live --replay: no such file {missing[0]}; give DBN files or a session date")
        symbols, records = replay.dbn_files([Path(s) for s in sources], day)
    until = globex_session(day)[0] if day else None
    if last_minutes:
        if day is None:
            raise SystemExit("cbi live --replay: --last-minutes needs the session (--day, or a session date)")
        until = globex_session(day)[1] - dt.timedelta(minutes=last_minutes)
        cut = int(until.timestamp()) * 1_000_000_000
        records = itertools.dropwhile(lambda r: replay.sent_at(r) <= cut, records)
    service = build_service(settings, until, pipeline="replay")
    stopping = _stop_on_signals()
    LOG.info(f"replaying {'the session ' + str(day) if day else ', '.join(sources)}" + (f" at {pace}x" if pace else ""))
    fed = replay.replay(service, symbols, records, pace, lambda n: LOG.info(f"{n:,} records replayed"), stopping)
    service.stop()
    status = service.status()
    LOG.info(
        f"replayed {fed:,} records: {status['bars']} bars, {status['forecasts']} forecasts written"
        + (
            f", a bar's forecasts in {status['p50_ms']} ms (p50), {status['p99_ms']} ms (p99)"
            if status["p50_ms"] is not None
            else ""
        )
    )
    return service


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def configure_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("mlflow", "databento", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
