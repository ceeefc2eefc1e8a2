"""The real Databento, FRED and Yahoo clients against a local server: answers, failures, keys."""

import datetime as dt
import logging

import numpy as np
import pytest

from cbi_assets.raw import dbn
from cbi_assets.raw.datasets import raw_dataset
from cbi_assets.raw.errors import (
    EmptyResponseError,
    MissingApiKeyError,
    RawDataError,
    SourceUnavailableError,
)
from cbi_assets.raw.ingest import ingest
from cbi_assets.raw.store import PartitionStore
from resources.databento_source import DatabentoSource
from resources.fred_source import FredSource
from resources.yahoo_source import YahooSource

# The real clients against local servers on 127.0.0.1, with their retries and backoff.
pytestmark = pytest.mark.integration

MARCH = (dt.date(2024, 3, 4), dt.date(2024, 3, 8))
NOW = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
FAST = {"max_attempts": 3, "backoff_seconds": 0.01}


def zl_download(days: list[dt.date], closes: list[float]) -> bytes:
    records = dbn.empty_records("ohlcv-1d", len(days))
    records["instrument_id"] = 4242
    records["ts_event"] = [int(dt.datetime.combine(d, dt.time(0), dt.UTC).timestamp()) * 10**9 for d in days]
    for column in ("open", "high", "low", "close"):
        records[column] = np.round(np.array(closes) * 1e9).astype(np.int64)
    records["volume"] = 1000
    return dbn.encode(
        records,
        schema="ohlcv-1d",
        dataset="GLBX.MDP3",
        symbols=["ZL.v.0"],
        stype_in="continuous",
        start_ns=0,
        end_ns=2 * 10**18,
        mappings={"ZL.v.0": [("2024-03-01", "2024-04-01", 4242)]},
    )


WEEK = [MARCH[0] + dt.timedelta(days=i) for i in range(5)]


def databento(server, **kwargs) -> DatabentoSource:
    return DatabentoSource(api_key="db-test-key-0000", gateway=server.url, **{**FAST, **kwargs})


def test_databento_bars_arrive_through_the_real_client(market_server):
    market_server.data["databento"][("ohlcv-1d", "ZL.v.0")] = zl_download(WEEK, [45.1, 45.2, 45.3, 45.4, 45.5])
    frame = databento(market_server).fetch(raw_dataset("zl_ohlcv_1d"), *MARCH)
    assert frame["close"].to_list() == pytest.approx([45.1, 45.2, 45.3, 45.4, 45.5])
    assert frame["symbol"].unique().to_list() == ["ZL.v.0"] and frame["instrument_id"].unique().to_list() == [4242]
    request = market_server.requests["databento"][-1]
    assert request["stype_in"] == "continuous" and request["schema"] == "ohlcv-1d" and request["key_sent"]
    assert request["start"].startswith("2024-03-04") and request["end"].startswith("2024-03-09")


def test_databento_parent_symbology_asks_for_every_contract(market_server):
    market_server.data["databento"][("ohlcv-1d", "ZL.FUT")] = zl_download(WEEK, [45.0] * 5)
    databento(market_server, symbology="parent").fetch(raw_dataset("zl_ohlcv_1d"), *MARCH)
    assert market_server.requests["databento"][-1]["stype_in"] == "parent"


def test_databento_intraday_requests_span_whole_globex_sessions(market_server):
    market_server.data["databento"][("ohlcv-1m", "MES.v.0")] = zl_download(WEEK, [5000.0] * 5)
    databento(market_server).fetch(raw_dataset("mes_ohlcv_1m"), *MARCH)
    request = market_server.requests["databento"][-1]
    # Monday's session opens Sunday 17:00 Chicago (23:00 UTC in winter); Friday's closes 16:00 (22:00 UTC).
    assert request["start"].startswith("2024-03-03T23:00") and request["end"].startswith("2024-03-08T22:00")


@pytest.mark.parametrize("failures", [[429], [500, 502], [429, 503]])
def test_databento_retries_rate_limits_and_server_errors(market_server, failures, caplog):
    market_server.data["databento"][("ohlcv-1d", "ZL.v.0")] = zl_download(WEEK, [45.0] * 5)
    market_server.script("databento", failures)
    with caplog.at_level(logging.WARNING):
        frame = databento(market_server).fetch(raw_dataset("zl_ohlcv_1d"), *MARCH)
    assert frame.height == 5
    assert len(market_server.requests["databento"]) == len(failures) + 1
    assert f"HTTP {failures[0]}" in caplog.text


def test_databento_gives_up_with_a_clear_error(market_server):
    market_server.script("databento", [503, 503, 503])
    with pytest.raises(
        SourceUnavailableError, match=r"ZL.v.0 2024-03-04..2024-03-08: HTTP 503 on all 3 attempts.*try again later"
    ):
        databento(market_server).fetch(raw_dataset("zl_ohlcv_1d"), *MARCH)


def test_databento_refusal_and_empty_body_are_clear(market_server):
    with pytest.raises(RuntimeError, match=r"refused the request \(HTTP 422"):
        databento(market_server).fetch(raw_dataset("zs_ohlcv_1d"), *MARCH)
    market_server.data["databento"][("ohlcv-1d", "ZM.v.0")] = b""
    with pytest.raises(RawDataError, match="response is not valid DBN"):
        databento(market_server).fetch(raw_dataset("zm_ohlcv_1d"), *MARCH)


def test_an_empty_answer_for_trading_days_is_an_error_and_writes_nothing(market_server, tmp_path):
    market_server.data["databento"][("ohlcv-1d", "ZL.v.0")] = zl_download([], [])
    dataset = raw_dataset("zl_ohlcv_1d")
    frame = databento(market_server).fetch(dataset, *MARCH)
    store = PartitionStore(tmp_path)
    with pytest.raises(
        EmptyResponseError, match=r"no zl_ohlcv_1d \(ZL\) records for 2024-03-04..2024-03-08, which has 5 trading day"
    ):
        ingest(dataset, frame, store, *MARCH, origin="Databento", received_at=NOW)
    assert store.days() == []
    # A weekend has no session: an empty answer for it is simply nothing to store.
    weekend = (dt.date(2024, 3, 9), dt.date(2024, 3, 10))
    assert ingest(dataset, frame, store, *weekend, origin="Databento", received_at=NOW).days == 0


def test_missing_key_names_the_variable_and_what_to_do():
    with pytest.raises(MissingApiKeyError, match="DATABENTO_API_KEY is not set.*CBI_SOURCE=sample"):
        DatabentoSource().fetch(raw_dataset("zl_ohlcv_1d"), *MARCH)
    with pytest.raises(MissingApiKeyError, match="FRED_API_KEY"):
        FredSource().fetch(raw_dataset("fred_dgs10"), *MARCH)


def fred(server, **kwargs) -> FredSource:
    return FredSource(api_key="fred-test-key-1111", api_root=f"{server.url}/fred", **{**FAST, **kwargs})


def test_fred_observations_with_missing_values(plain_server):
    plain_server.data["fred"]["DGS10"] = [("2024-03-04", 4.22), ("2024-03-05", None), ("2024-03-06", 4.11)]
    frame = fred(plain_server).fetch(raw_dataset("fred_dgs10"), *MARCH)
    assert frame["value"].to_list() == [4.22, None, 4.11]
    assert frame["ts_event"].dt.date().to_list() == [dt.date(2024, 3, 4), dt.date(2024, 3, 5), dt.date(2024, 3, 6)]
    request = plain_server.requests["fred"][-1]
    assert request["observation_start"] == "2024-03-04" and request["key_sent"]


def test_fred_retries_then_gives_up_without_leaking_the_key(plain_server, caplog):
    plain_server.data["fred"]["DGS10"] = [("2024-03-04", 4.22)]
    plain_server.script("fred", [429, 500])
    with caplog.at_level(logging.DEBUG):
        assert fred(plain_server).fetch(raw_dataset("fred_dgs10"), *MARCH).height == 1
    plain_server.script("fred", [500, 500, 500])
    with pytest.raises(
        SourceUnavailableError, match="FRED DGS10 2024-03-04..2024-03-08: HTTP 500 on all 3 attempts"
    ) as caught:
        fred(plain_server).fetch(raw_dataset("fred_dgs10"), *MARCH)
    assert "fred-test-key-1111" not in str(caught.value) + caplog.text


def test_fred_unknown_series_is_a_clear_refusal(plain_server):
    with pytest.raises(RawDataError, match="FRED refused the request: Bad Request.  The series does not exist"):
        fred(plain_server).fetch(raw_dataset("fred_dgs2"), *MARCH)


def yahoo(server) -> YahooSource:
    return YahooSource(gateway=server.url, **FAST)


VIX = [("2024-03-04", 13.5, 14.2, 13.1, 14.0, 14.0, 0), ("2024-03-05", 14.0, 15.1, 13.9, 14.5, 14.5, 0)]


def test_yahoo_history_through_the_real_client(plain_server):
    plain_server.data["yahoo"]["^VIX"] = VIX
    frame = yahoo(plain_server).fetch(raw_dataset("yahoo_vix"), *MARCH)
    assert frame["ts_event"].dt.date().to_list() == [dt.date(2024, 3, 4), dt.date(2024, 3, 5)]
    assert frame["close"].to_list() == [14.0, 14.5] and frame["high"].to_list() == [14.2, 15.1]
    assert any("period1" in r for r in plain_server.requests["yahoo"])


def test_yahoo_retries_server_errors_then_gives_up(plain_server):
    plain_server.data["yahoo"]["^VIX"] = VIX
    plain_server.script("yahoo", [500, 500])
    assert yahoo(plain_server).fetch(raw_dataset("yahoo_vix"), *MARCH).height == 2
    plain_server.script("yahoo", [503] * 20)
    with pytest.raises(SourceUnavailableError, match=r"Yahoo \^VIX 2024-03-04..2024-03-08: HTTP 503 on all 3 attempts"):
        yahoo(plain_server).fetch(raw_dataset("yahoo_vix"), *MARCH)


def test_yahoo_rate_limit_is_retried_then_reported(plain_server):
    plain_server.data["yahoo"]["^VIX"] = VIX
    plain_server.script("yahoo", [429] * 20)
    with pytest.raises(SourceUnavailableError, match="HTTP 429"):
        yahoo(plain_server).fetch(raw_dataset("yahoo_vix"), *MARCH)


def test_yahoo_without_bars_is_an_empty_answer(plain_server, tmp_path):
    plain_server.data["yahoo"]["^VIX"] = VIX
    frame = yahoo(plain_server).fetch(raw_dataset("yahoo_vix"), dt.date(2023, 1, 2), dt.date(2023, 1, 6))
    assert frame.is_empty() and "close" in frame.columns
    with pytest.raises(EmptyResponseError):
        ingest(
            raw_dataset("yahoo_vix"),
            frame,
            PartitionStore(tmp_path),
            dt.date(2023, 1, 2),
            dt.date(2023, 1, 6),
            origin="Yahoo",
            received_at=NOW,
        )
