"""The live MES service on the sample: the lake holds every session but the last, carried through the MES
intraday models of two horizons (their champions in MLflow); the last session then arrives live.

- Replayed from the sample's DBN files, every live master row and forecast equals what the batch graph
  computes for the same bar once the same records are in the lake.
- Through the real `databento.Live` client against a local gateway (`live_gateway.py`) that drops the
  connection (the gap is filled from a local historical API), sends a duplicate and an out-of-order bar,
  and a SIGTERM: the raw layer holds each minute once, the warehouse each forecast once.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from cbi_assets import lake as tables
from cbi_assets.calendars import globex_session
from cbi_assets.catalogue import MES
from cbi_assets.lake import Lake, live_status, warehouse_file
from cbi_assets.live.replay import dbn_files, replay, sent_at
from cbi_assets.live.run import build_service
from cbi_assets.predictions import history
from cbi_assets.predictions.today import HorizonForecaster
from cbi_assets.profiles import load_profile
from cbi_assets.raw.datasets import RAW_DATASETS
from cbi_assets.raw.ingest import ingest
from cbi_assets.settings import PROJECT_ROOT, Settings
from cbi_assets.training.sets import feature_timeframe
from cbi_assets.warehouse import Warehouse
from cbi_assets_tests.conftest import SAMPLE_END, lake_resources, sample_records
from resources.databento_source import DatabentoSource

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("live")]

DAY = dt.date.fromisoformat(SAMPLE_END)  # the session that arrives live
OPENS = globex_session(DAY)[0]
HORIZONS = ("1min", "5min")  # trained; the other four have no champion and must say so
MINUTES = 75  # of the session replayed: every 5-minute bar, and the first hour of 1-minute bars past the warmup


@pytest.fixture(scope="module")
def live_lake(sample_folder, tmp_path_factory):
    """(lake root, MLflow folder): the sample through the session before DAY, with every feature and the MES
    regimes, training sets, models and leaderboard of HORIZONS."""
    from cbi_assets.features.assets import FEATURE_ASSETS
    from cbi_assets.models.assets import MODEL_ASSETS
    from cbi_assets.regimes.assets import REGIME_ASSETS
    from cbi_assets.training.assets import TRAINING_ASSETS

    root = tmp_path_factory.mktemp("live_lake")
    mlflow = root / "mlflow"
    lake, now = Lake(root=str(root / "lake")), dt.datetime.now(dt.UTC)
    for name, frame in sample_records(sample_folder, start="2016-01-01").items():
        if frame.height:
            dataset, last = RAW_DATASETS[name], DAY - dt.timedelta(days=1)
            ingest(dataset, frame, lake.raw(dataset), dt.date(2015, 1, 1), last, origin="sample", received_at=now)
    resources = lake_resources(root / "lake", mlflow=mlflow)
    assert dg.materialize(FEATURE_ASSETS, resources=resources).success
    instance = dg.DagsterInstance.ephemeral()
    tags = {"dagster/asset_partition_range_start": HORIZONS[0], "dagster/asset_partition_range_end": HORIZONS[-1]}
    assert dg.materialize([a for a in REGIME_ASSETS if a.key.path[0] == "shared"], resources=resources).success
    for layer in (REGIME_ASSETS, TRAINING_ASSETS, MODEL_ASSETS):
        mes = [a for a in layer if a.key.path[0] == "mes" and a.partitions_def is not None]
        assert dg.materialize(mes, resources=resources, instance=instance, tags=tags).success
    return root / "lake", mlflow


def _copy(live_lake, tmp_path: Path) -> Settings:
    """Settings over a copy of the lake (its warehouse included) and the shared MLflow store."""
    lake, mlflow = live_lake
    shutil.copytree(lake, tmp_path / "lake")
    return Settings.from_env(_env(tmp_path / "lake", mlflow))


def _env(lake: Path, mlflow: Path) -> dict[str, str]:
    return {
        "CBI_LAKE": str(lake),
        "CBI_MODELS": str(mlflow),
        "CBI_MLFLOW_URI": f"sqlite:///{mlflow / 'mlflow.db'}",
        "CBI_SOURCE": "sample",
        "CBI_PROFILE": "sample",
    }


def _dbn(sample_folder: Path, schema: str) -> Path:
    return sample_folder / "dbn" / "GLBX.MDP3" / f"MES.v.0.{schema}.dbn.zst"


def _first_minutes(records, minutes: int):
    cut = int((OPENS + dt.timedelta(minutes=minutes)).timestamp()) * 1_000_000_000
    return itertools.takewhile(lambda r: sent_at(r) <= cut, records)


def test_a_replayed_session_forecasts_what_the_batch_graph_computes(live_lake, sample_folder, tmp_path):
    from cbi_assets.features.assets import FEATURE_ASSETS

    settings = _copy(live_lake, tmp_path)
    service = build_service(settings, OPENS, pipeline="replay")
    assert sorted(service.horizons) == sorted(HORIZONS)
    assert set(service.counts.failed) == {h.name for h in MES.horizons if h.intraday} - set(HORIZONS)
    assert all("no champion" in why for why in service.counts.failed.values())
    alerted = _live_alerts(settings)
    assert sorted(alerted["horizon"]) == sorted(service.counts.failed), alerted  # one alert each

    files = [_dbn(sample_folder, s) for s in ("ohlcv-1m", "trades", "tbbo", "mbp-10")]
    symbols, records = dbn_files(files, DAY)
    records = _first_minutes(records, MINUTES)
    fed = replay(service, symbols, itertools.islice(records, 400))  # about half of them
    service.stop()
    # A restart mid-session: the next service catches up on what this one stored (bars, ticks, rows).
    before = service.newest
    service = build_service(settings, before, pipeline="replay")
    assert service.window.closed["1min"] == before and service.horizons["1min"].rows.newest == before
    # A new 1-minute champion registered mid-session is loaded and swapped in; the forecasts go on.
    registered = service.champion_of
    service.champion_of = lambda h: "a newer version" if h.name == "1min" else registered(h)
    assert service.reload() == ["1min"] and service.horizons["1min"].rows.newest == before
    # A 5-minute champion that does not load: an alert, and the horizon goes on with the model it holds.
    loading, held = service.load, service.horizons["5min"]

    def unloadable(horizon):
        raise OSError(f"the artifacts of MES {horizon.name} are not readable")

    service.load = unloadable
    service.champion_of = lambda h: "a broken version" if h.name == "5min" else registered(h)
    assert service.reload() == [] and service.horizons["5min"] is held and "5min" in service.counts.failed
    service.load, service.champion_of = loading, registered
    fed += replay(service, symbols, records)
    assert "5min" not in service.counts.failed  # it forecast again
    # A reconnection whose gap the historical API cannot serve: the minutes are marked missing, nothing else moves.
    unreachable = DatabentoSource(
        api_key="db-" + "k" * 29, gateway=f"http://127.0.0.1:{_closed_port()}", max_attempts=1
    )
    gap = (service.newest, service.newest + dt.timedelta(minutes=3))
    assert service.fill_gap(*gap, unreachable) == 0
    assert service.status()["missing"] == [f"{gap[0].isoformat()}..{gap[1].isoformat()}"]
    service.stop()
    assert fed > MINUTES and service.newest == OPENS + dt.timedelta(minutes=MINUTES)
    alerted = _live_alerts(settings)
    # The restarted service found the start's alerts already sent; the broken 5-minute champion has its own.
    assert sorted(alerted["horizon"]) == sorted([*service.counts.failed, "5min"]), alerted
    assert "a broken version did not load live" in alerted.filter(pl.col("horizon") == "5min")["message"][0]

    lake = Lake(root=str(settings.lake))
    warehouse = Warehouse(database=str(warehouse_file(settings.lake)))
    stored = history.read(warehouse, MES)
    live = stored.filter(pl.col("pipeline") == "replay")
    assert live.select(history.KEY).is_duplicated().sum() == 0
    assert live.filter(pl.col("horizon") == "1min").height == MINUTES
    assert live.filter(pl.col("horizon") == "5min").height == MINUTES // 5

    # The evening ingest of the same records finds the day unchanged.
    minutes = RAW_DATASETS["mes_ohlcv_1m"]
    sent = sample_records(sample_folder, start=str(DAY))["mes_ohlcv_1m"].filter(
        pl.col("ts_event") < OPENS + dt.timedelta(minutes=MINUTES)
    )
    evening = ingest(minutes, sent, lake.raw(minutes), DAY, DAY, origin="evening", received_at=dt.datetime.now(dt.UTC))
    assert evening.unchanged == [DAY], evening.metadata()

    # The batch graph over the same lake: its master rows, then its forecast of each bar.
    intraday = [a for a in FEATURE_ASSETS if a.key.path[:2] == ["mes", "features"]]
    assert dg.materialize(intraday, resources=lake_resources(settings.lake)).success
    for horizon in HORIZONS:
        timeframe = feature_timeframe(MES.horizon(horizon))
        rows = lake.read(tables.LIVE_FEATURES, timeframe=timeframe, day=DAY).sort("ts")
        batch = lake.read(tables.MASTER, market=MES, timeframe=timeframe).filter(
            pl.col("ts").is_in(rows["ts"].implode())
        )
        assert batch["ts"].sort().equals(rows["ts"])
        features = [c for c in rows.columns if c not in ("ts_event", "ts", "trade_date")]
        assert sorted(features) == sorted(c for c in batch.columns if c not in ("ts_event", "ts", "trade_date"))
        a, b = rows.select(features).to_numpy(), batch.sort("ts").select(features).to_numpy()
        close = np.isclose(a, b, rtol=1e-4, atol=1e-6, equal_nan=True)
        assert close.all(), (
            horizon,
            rows["ts"].filter(~close.all(axis=1)).to_list()[:5],
            features_off(close, features),
        )

    profile = load_profile("sample")
    tracking = lake_resources(settings.lake, mlflow=live_lake[1])["tracking"]
    for horizon in HORIZONS:
        forecaster = HorizonForecaster(
            lake,
            tracking,
            MES,
            MES.horizon(horizon),
            profile.training,
            (0.8, 0.9),
            30,
            0,
            _Quiet(),
            profile.significance,
        )
        master = lake.scan(tables.MASTER, market=MES, timeframe=feature_timeframe(MES.horizon(horizon)))
        bars = lake.read(tables.BARS, timeframe=feature_timeframe(MES.horizon(horizon)))
        made = live.filter((pl.col("horizon") == horizon) & (pl.col("role") == "champion")).sort("as_of")
        for row in made.gather_every(7).iter_rows(named=True):
            as_of = row["as_of"].astimezone(dt.UTC)
            origin = forecaster.latest_origin(master.filter(pl.col("ts") <= as_of))
            assert origin.time == as_of
            price = bars.filter(pl.col("ts") == as_of)["close"][0]
            expected = forecaster.forecast(origin, price)[0].row(0, named=True)
            for column in ("forecast_return", "forecast_price", "lower_90", "upper_90", "conviction", "confidence"):
                want, got = expected[column], row[column]
                assert (want is None and got is None) or np.isclose(got, want, rtol=1e-4, atol=1e-8), (column, row)


def _live_alerts(settings: Settings) -> pl.DataFrame:
    return Warehouse(database=str(warehouse_file(settings.lake))).query(
        "select horizon, message from monitoring.alerts where kind = 'live'"
    )


def _closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def features_off(close: np.ndarray, features: list[str]) -> list[str]:
    return [features[j] for j in np.flatnonzero(~close.all(axis=0))][:8]


class _Quiet:
    def info(self, message):
        pass

    warning = info


# --- The live client against a local gateway ---------------------------------------------------------


def test_the_live_client_reconnects_fills_the_gap_and_flushes_on_sigterm(live_lake, sample_folder, tmp_path):
    from cbi_assets_tests.live_gateway import Instrument, LiveGateway
    from cbi_assets_tests.market_server import MarketServer

    settings = _copy(live_lake, tmp_path)
    _, records = dbn_files([_dbn(sample_folder, "ohlcv-1m")], DAY)
    bars = list(_first_minutes(records, 40))
    # A duplicate of the 10th bar right after it, and the 20th bar sent after the 22nd (late, out of order).
    sent = [*bars[:10], bars[9], *bars[10:19], bars[20], bars[21], bars[19], *bars[22:]]
    key = "db-" + "k" * 29
    download = _dbn(sample_folder, "ohlcv-1m").read_bytes()
    with (
        LiveGateway(key, {"MES.v.0": Instrument(bars[0].instrument_id, "MESU4")}) as gateway,
        MarketServer(tls=True) as historical,
    ):
        historical.data["databento"][("ohlcv-1m", "MES.v.0")] = download
        gateway.feed(sent)
        gateway.drop_after(30, resume="skip", skip=3)  # three bars lost with the connection
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CBI_")},
            **_env(settings.lake, live_lake[1]),
            "DATABENTO_API_KEY": key,
            "CBI_LIVE_GATEWAY": gateway.host,
            "CBI_LIVE_PORT": str(gateway.port),
            "CBI_DATABENTO_HISTORICAL": historical.url,
            "REQUESTS_CA_BUNDLE": historical.cert_path,
        }
        log = tmp_path / "live.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "cbi_assets.cli", "live"], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=out
            )
        last_close = bars[-1].ts_event + 60 * 1_000_000_000
        try:
            status = _wait_for(live_status(settings.lake), last_close, process, log)
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=120)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert len(gateway.sessions) >= 2 and gateway.sessions[0].dropped, text[-3000:]
    assert "filling" in text
    final = json.loads(live_status(settings.lake).read_text())
    assert final["duplicates"] >= 1 and final["late"] >= 1, final
    assert status["forecasts"] > 0

    # Every minute sent is in the raw layer once: the three lost with the connection came from the history.
    lake = Lake(root=str(settings.lake))
    stored = lake.raw(RAW_DATASETS["mes_ohlcv_1m"]).read(DAY, DAY).collect()
    assert stored["ts_event"].is_duplicated().sum() == 0
    assert stored.height == len(bars)
    assert stored["ts_event"].is_sorted()
    warehouse = Warehouse(database=str(warehouse_file(settings.lake)))
    live = history.read(warehouse, MES).filter(pl.col("pipeline") == "live")
    assert live.select(history.KEY).is_duplicated().sum() == 0
    # A bar that came after a newer one is stored, and not forecast: the forecasts made are what the desk saw.
    ones = live.filter((pl.col("horizon") == "1min") & (pl.col("role") == "champion"))
    assert ones.height == len(bars) - final["late"], final


def _wait_for(path: Path, last_close_ns: int, process: subprocess.Popen, log: Path) -> dict:
    """The service's status once it has taken the bar closing at `last_close_ns` (the process must not end first)."""
    want = dt.datetime.fromtimestamp(last_close_ns / 1e9, dt.UTC)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"cbi live ended early ({process.returncode}):\n{log.read_text()[-3000:]}")
        if path.is_file():
            try:
                status = json.loads(path.read_text())
            except json.JSONDecodeError:
                status = {}
            if status.get("last_bar_close") and dt.datetime.fromisoformat(status["last_bar_close"]) >= want:
                return status
        time.sleep(0.5)
    raise AssertionError(f"the service did not take the last bar in 10 minutes:\n{log.read_text()[-3000:]}")
