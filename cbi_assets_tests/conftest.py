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
