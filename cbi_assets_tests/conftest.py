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


# --- The sample as feature-layer inputs, without a lake ---------------------------------------

SAMPLE_END = "2024-06-28"


@pytest.fixture(scope="session")
def sample_folder(tmp_path_factory):
    import datetime as dt

    from cbi_assets.sample import SampleConfig, build_sample

    config = SampleConfig(end=dt.date.fromisoformat(SAMPLE_END), intraday_sessions=60, tick_sessions=2, trades_per_session=6_000)
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
    return (continuous, inputs.series(records), inputs.minutes(records["mes_ohlcv_1m"], continuous["mes"]),
            {kind: records[f"mes_{kind}"] for kind in inputs.TICKS})
