"""Shared fixtures: the real data folder (skipped where absent) and the local market server."""

from __future__ import annotations

from pathlib import Path

import pytest

from cbi_assets_tests.market_server import MarketServer

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not (REAL_DATA / "daily").is_dir():
        pytest.skip(f"real market data not found at {REAL_DATA} (it sits in ../shared/data/real beside the project)")
    return REAL_DATA


@pytest.fixture
def market_server(monkeypatch):
    """A local Databento/FRED/Yahoo look-alike over TLS on 127.0.0.1; clients trust its certificate."""
    with MarketServer(tls=True) as server:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.cert_path)
        yield server


@pytest.fixture
def plain_server():
    """The same server over plain HTTP, for clients that take an http:// root (fredapi, yfinance)."""
    with MarketServer() as server:
        yield server


def lake_resources(root, mlflow=None, warehouse_url: str | None = None) -> dict:
    """The resources an asset test materializes with: the lake at `root`, its warehouse (the DuckDB file beside
    it, or the PostgreSQL database `warehouse_url`), the sample profile, and an MLflow store in the folder
    `mlflow` when given."""
    from cbi_assets.lake import Lake, warehouse_file
    from cbi_assets.profiles import TrainingProfile
    from cbi_assets.warehouse import Warehouse
    from resources import Tracking

    resources = {
        "lake": Lake(root=str(root)),
        "profile": TrainingProfile(name="sample"),
        "warehouse": Warehouse(database=str(warehouse_file(root)), url=warehouse_url),
    }
    if mlflow is not None:
        resources["tracking"] = Tracking(
            tracking_uri=f"sqlite:///{Path(mlflow) / 'mlflow.db'}", artifact_root=str(Path(mlflow) / "artifacts")
        )
    return resources


# --- The sample as feature-layer inputs, without a lake ---------------------------------------

SAMPLE_END = "2024-06-28"


@pytest.fixture(scope="session")
def sample_folder(tmp_path_factory):
    import datetime as dt

    from cbi_assets.sample import SampleConfig, build_sample

    config = SampleConfig(
        end=dt.date.fromisoformat(SAMPLE_END), intraday_sessions=60, tick_sessions=2, trades_per_session=6_000
    )
    return build_sample(config, tmp_path_factory.mktemp("sample") / "folder")


def sample_records(folder, start="2015-01-01") -> dict:
    """Every raw dataset of the sample from `start`, as the sources return them."""
    import datetime as dt

    from cbi_assets.raw.datasets import RAW_DATASETS
    from resources.local_files import LocalFilesSource
    from resources.sample_source import SampleSource

    source = LocalFilesSource(root=str(folder))
    coverage = SampleSource(cache_dir="unused", end=SAMPLE_END, intraday_sessions=60, tick_sessions=2)
    out = {}
    for name, dataset in RAW_DATASETS.items():
        first, last = coverage.coverage(dataset)
        out[name] = source.fetch(dataset, max(first, dt.date.fromisoformat(start)), last)
    return out


def feature_inputs(records: dict):
    """(continuous, series, minutes, ticks) from raw records."""
    from cbi_assets.features import inputs

    daily = {s: records[f"{s.lower()}_ohlcv_1d"] for s in ("ZL", "ZS", "ZM", "CL", "HO", "ES", "MES")}
    continuous = inputs.continuous(daily)
    return (
        continuous,
        inputs.series(records),
        inputs.minutes(records["mes_ohlcv_1m"], continuous["mes"]),
        {kind: records[f"mes_{kind}"] for kind in inputs.TICKS},
    )


@pytest.fixture(scope="session")
def feature_lake(sample_folder, tmp_path_factory):
    """The sample's records from 2016 stored as raw partitions, then every feature asset materialized
    by Dagster on them: (lake root, the materialize result). Tests that share it are grouped on one
    xdist worker (`xdist_group("feature_lake")`) so it is built once."""
    import datetime as dt

    import dagster as dg
    import polars as pl

    from cbi_assets.features.assets import FEATURE_ASSETS
    from cbi_assets.lake import Lake
    from cbi_assets.raw.datasets import RAW_DATASETS
    from cbi_assets.raw.ingest import ingest

    root = tmp_path_factory.mktemp("feature_lake")
    lake = Lake(root=str(root))
    now = dt.datetime.now(dt.UTC)
    for name, frame in sample_records(sample_folder, start="2016-01-01").items():
        dataset = RAW_DATASETS[name]
        days = frame.select(pl.col("ts_event").dt.date()).to_series()
        if frame.height:
            ingest(
                dataset,
                frame,
                lake.raw(dataset),
                days.min() - dt.timedelta(days=1),
                days.max() + dt.timedelta(days=1),
                origin="sample",
                received_at=now,
            )
    return root, dg.materialize(FEATURE_ASSETS, resources=lake_resources(root))


@pytest.fixture(scope="session")
def zl_model_lake(feature_lake, tmp_path_factory):
    """The feature lake carried through ZL 1w: regime calendar and state, training sets, folds,
    meta-learning tasks, every model family and the leaderboard, with an MLflow store of its own.
    Returns (lake root, resources). Share it within `xdist_group("feature_lake")`."""
    import dagster as dg

    from cbi_assets.models.assets import MODEL_ASSETS
    from cbi_assets.regimes.assets import REGIME_ASSETS
    from cbi_assets.training.assets import TRAINING_ASSETS

    lake, _ = feature_lake
    resources = lake_resources(lake, mlflow=tmp_path_factory.mktemp("zl_mlflow"))
    one_week = {"dagster/asset_partition_range_start": "1w", "dagster/asset_partition_range_end": "1w"}
    instance = dg.DagsterInstance.ephemeral()
    calendar = [a for a in REGIME_ASSETS if a.key.path[0] == "shared"]
    assert dg.materialize(calendar, resources=resources, instance=instance).success
    for layer in (REGIME_ASSETS, TRAINING_ASSETS, MODEL_ASSETS):
        zl = [a for a in layer if a.key.path[0] == "zl"]
        assert dg.materialize(zl, resources=resources, instance=instance, tags=one_week).success
    return lake, resources
