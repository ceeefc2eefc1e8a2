"""The catalogue says exactly what architecture.md says, and everything derives from it."""

import datetime as dt

import pytest

from cbi_assets.catalogue import (
    FRED_SERIES,
    FUTURES,
    MARKETS,
    REGIMES,
    TIMEFRAMES,
    YAHOO_TICKERS,
    regime_of,
)
from cbi_assets.raw.datasets import RAW_DATASETS


def test_horizons_and_their_length_in_bars():
    assert {h.name: h.bars for h in MARKETS["ZL"].horizons} == {"1w": 5, "1m": 21, "3m": 63, "6m": 126, "12m": 252}
    mes = {h.name: (h.bars, h.timeframe) for h in MARKETS["MES"].horizons}
    assert mes["1min"] == (1, "1min") and mes["4h"] == (240, "1min") and mes["1h"] == (60, "1min")
    assert [n for n, (_, tf) in mes.items() if tf == "1d"] == ["1d", "7d", "30d", "3m", "6m", "12m"]
    assert list(TIMEFRAMES) == ["1min", "5min", "15min", "30min", "1h", "4h", "1d"]


def test_no_invalid_asset_horizon_pairs():
    pairs = {(m.symbol, h.name) for m in MARKETS.values() for h in m.horizons}
    assert ("ZL", "1w") in pairs and ("MES", "1min") in pairs
    assert ("MES", "1w") not in pairs and ("ZL", "1min") not in pairs
    assert len(pairs) == 5 + 12


def test_every_date_has_exactly_one_named_regime():
    day = dt.date(1990, 1, 1)
    while day <= dt.date(2030, 12, 31):
        assert sum(r.contains(day) for r in REGIMES) == 1, day
        day += dt.timedelta(days=1)
    assert regime_of(dt.date(2008, 10, 10)).name == "financial_crisis_2008_2009"
    assert regime_of(dt.date(2026, 11, 20)).weight == 5000
    assert regime_of(dt.date(1995, 1, 1)).weight == 50


def test_sources_match_the_architecture():
    assert set(FRED_SERIES) == {
        "DGS10",
        "DGS2",
        "T10Y2Y",
        "DFF",
        "DTWEXBGS",
        "T10YIE",
        "VIXCLS",
        "DCOILWTICO",
        "BAMLH0A0HYM2",
        "DEXCHUS",
        "DEXUSEU",
        "DEXJPUS",
        "CPIAUCSL",
    }
    assert FRED_SERIES["CPIAUCSL"].frequency == "monthly"
    assert {"ZL=F", "^VIX", "DX-Y.NYB", "BRL=X"} <= set(YAHOO_TICKERS)
    assert FUTURES["ZL"].continuous == "ZL.v.0" and FUTURES["MES"].parent == "MES.FUT"
    assert FUTURES["MES"].listed == dt.date(2019, 5, 6)
    assert FUTURES["ZL"].tick_size == 0.01 and FUTURES["ES"].tick_size == 0.25


def test_raw_datasets_derive_from_the_catalogue():
    names = set(RAW_DATASETS)
    assert {f"{s.lower()}_ohlcv_1d" for s in FUTURES} <= names
    assert {"mes_ohlcv_1m", "mes_trades", "mes_tbbo", "mes_mbp_10", "mes_definition"} <= names
    assert {f"fred_{s.lower()}" for s in FRED_SERIES} <= names
    assert len({d.key for d in RAW_DATASETS.values()}) == len(RAW_DATASETS)
    assert RAW_DATASETS["zs_ohlcv_1d"].area == "ZL" and RAW_DATASETS["es_ohlcv_1d"].area == "MES"
    assert RAW_DATASETS["fred_dff"].calendar == "all_days"


def test_unknown_horizon_names_the_valid_ones():
    with pytest.raises(KeyError, match="valid horizons: 1w, 1m"):
        MARKETS["ZL"].horizon("1min")
