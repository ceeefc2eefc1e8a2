"""The post-move audit on a hand-made lake: raw partitions, master-feature rows and the day's predictions."""

import datetime as dt
import math

import dagster as dg
import duckdb
import polars as pl
import pytest

from cbi_assets import lake as tables
from cbi_assets.calendars import settlement_days
from cbi_assets.catalogue import ZL
from cbi_assets.features.master import Table
from cbi_assets.features.spec import FeatureSpec
from cbi_assets.lake import Lake, warehouse_file
from cbi_assets.monitoring import audit
from cbi_assets.monitoring.assets import MONITORING_ASSETS
from cbi_assets.raw.datasets import RAW_DATASETS
from cbi_assets.raw.store import PartitionStore
from cbi_assets_tests.conftest import lake_resources
from resources.alerts import Alerts

UTC = dt.UTC
DAY = dt.date(2024, 6, 28)  # a Friday session
SESSIONS = settlement_days(dt.date(2024, 4, 1), DAY)
STEP = 0.002  # log return per session of the hand-made ZL price: a typical 1w move of 0.01


def _bars(day: dt.date, close: float, **overrides) -> pl.DataFrame:
    values = {"open": close, "high": close + 0.2, "low": close - 0.2, "close": close, **overrides}
    return pl.DataFrame(
        {
            "ts_event": [dt.datetime.combine(day, dt.time(), UTC)],
            "instrument_id": [7],
            **{k: [float(v)] for k, v in values.items()},
            "volume": [1000.0],
        }
    ).with_columns(pl.col("ts_event").cast(pl.Datetime("ns", "UTC")), pl.col("instrument_id").cast(pl.UInt32))


def _store(root, name: str) -> PartitionStore:
    return Lake(root=str(root)).raw(RAW_DATASETS[name])


def _prediction(lower: float, upper: float) -> dict:
    price, forecast = 50.0, 0.004
    return {
        "asset": "ZL",
        "horizon": "1w",
        "as_of": dt.datetime.combine(DAY, dt.time(), UTC),
        "model_version": "cbi-ZL-1w/1",
        "role": "champion",
        "price": price,
        "forecast_return": forecast,
        "forecast_price": price * math.exp(forecast),
        "lower_80": lower,
        "upper_80": upper,
        "lower_90": lower,
        "upper_90": upper,
        "lower_80_price": price * math.exp(lower),
        "upper_80_price": price * math.exp(upper),
        "lower_90_price": price * math.exp(lower),
        "upper_90_price": price * math.exp(upper),
    }


@pytest.fixture
def lake(tmp_path):
    """Two sessions of ZL and VIX bars, the ZL continuous bars and master table through DAY, and one
    published ZL 1w forecast made on DAY."""
    for day in SESSIONS[-2:]:
        _store(tmp_path, "zl_ohlcv_1d").write(day, _bars(day, 50.0))
        _store(tmp_path, "yahoo_vix").write(day, _bars(day, 14.0).drop("instrument_id"))
    stored = Lake(root=str(tmp_path))
    close = [40 * math.exp(STEP * i) for i in range(len(SESSIONS))]
    stored.write(
        tables.CONTINUOUS, pl.DataFrame({"date": SESSIONS, "close": close, "adj": 1.0, "symbol": "zl"}), market=ZL
    )
    specs = [
        FeatureSpec(name, "ZL/technical", "ZL front settlement", "1d", 5, "settled close", name)
        for name in ("zl_return_5d", "zl_vol_5d")
    ]
    frame = pl.DataFrame(
        {"date": SESSIONS[-3:], "zl_return_5d": [None, 0.01, 0.02], "zl_vol_5d": [0.1, 0.2, 0.3]},
        schema={"date": pl.Date, "zl_return_5d": pl.Float32, "zl_vol_5d": pl.Float32},
    )
    stored.write_features(tables.MASTER, Table(frame, specs, ("date",)), "zl_master_1d", market=ZL, timeframe="1d")
    _publish(warehouse_file(tmp_path), [_prediction(-0.02, 0.03)])
    return tmp_path


def _publish(warehouse, rows: list[dict]) -> None:
    frame = pl.DataFrame(rows)
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute("create schema if not exists predictions")
        conn.register("incoming", frame.to_arrow())
        conn.execute("create table if not exists predictions.history as select * from incoming where false")
        conn.execute("insert into predictions.history by name select * from incoming")


def _audit(lake, reason: str = "move", day: str | None = None):
    resources = lake_resources(lake)
    job = next(a for a in MONITORING_ASSETS if a.key == dg.AssetKey(["monitoring", "audit"]))
    return dg.materialize(
        [job],
        resources={**resources, "alerts": Alerts(warehouse=resources["warehouse"])},
        run_config=dg.RunConfig({"monitoring__audit": {"config": {"reason": reason, "day": day}}}),
    )


def _table(lake, query: str) -> pl.DataFrame:
    with duckdb.connect(str(warehouse_file(lake)), read_only=True) as conn:
        tables = {
            r[0]
            for r in conn.sql(
                "select table_name from information_schema.tables where table_schema = 'monitoring'"
            ).fetchall()
        }
        if query.split(" from monitoring.")[1].split()[0] not in tables:
            return pl.DataFrame()
        return conn.sql(query).pl()


@pytest.mark.integration
def test_a_clean_day_has_no_problems_and_raises_no_alert(lake):
    assert audit.newest_day(Lake(root=str(lake))) == DAY
    result = _audit(lake)  # the day defaults to the newest in the lake
    assert result.success
    findings = _table(lake, "select * from monitoring.audits")
    assert set(findings["status"]) == {"ok"}, findings.filter(pl.col("status") == "problem").to_dicts()
    assert set(findings["day"]) == {DAY} and set(findings["reason"]) == {"move"}
    assert {"raw", "features", "predictions"} == set(findings["area"])
    assert {
        "zl_ohlcv_1d:values",
        "yahoo_vix:ohlc",
        "ZL master_1d:nulls",
        "ZL 1w:interval_contains_point",
        "ZL 1w:plausible",
        "ZL 1w:prices_positive",
    } <= set(findings["item"])
    assert _table(lake, "select * from monitoring.alerts").is_empty()
    metadata = result.asset_materializations_for_node("monitoring__audit")[0].metadata
    assert metadata["problems"].value == 0 and metadata["alert_sent"].value is False


@pytest.mark.integration
def test_a_corrupted_value_and_an_interval_without_its_point_are_problems_with_one_alert(lake):
    # A revised ZL partition with a negative close and a high below its open, and a forecast
    # outside its own interval.
    _store(lake, "zl_ohlcv_1d").write(DAY, _bars(DAY, -50.0, open=50.0, high=49.0, low=48.0))
    _publish(warehouse_file(lake), [_prediction(0.01, 0.03) | {"model_version": "cbi-ZL-1w/2"}])

    result = _audit(lake, reason="move", day=DAY.isoformat())

    assert result.success
    problems = _table(lake, "select * from monitoring.audits where status = 'problem' order by item")
    assert problems["item"].to_list() == ["ZL 1w:interval_contains_point", "zl_ohlcv_1d:ohlc", "zl_ohlcv_1d:values"]
    detail = dict(zip(problems["item"], problems["detail"], strict=True))
    assert "close = -50.0 is zero or below, where ZL never trades" in detail["zl_ohlcv_1d:values"]
    assert "v0002-" in detail["zl_ohlcv_1d:values"]  # names the stored file
    assert (
        "1 of 2 intervals do not contain their point forecast: cbi-ZL-1w/2" in detail["ZL 1w:interval_contains_point"]
    )
    alerts = _table(lake, "select * from monitoring.alerts")
    assert alerts.height == 1
    alert = alerts.row(0, named=True)
    assert alert["kind"] == "audit" and alert["key"] == f"audit:{DAY}:move" and alert["severity"] == "error"
    assert "3 problem(s)" in alert["message"]

    # The same audit again records its findings but does not alert twice.
    assert _audit(lake, reason="move", day=DAY.isoformat()).success
    assert _table(lake, "select * from monitoring.alerts").height == 1
    assert _table(lake, "select * from monitoring.audits where status = 'problem'").height == 6


def test_feature_rows_with_new_nulls_or_missing_are_problems(lake):
    specs = [FeatureSpec(n, "ZL/technical", "x", "1d", None, "settled close", n) for n in ("a", "b")]
    before = pl.DataFrame({"a": [1.0], "b": [2.0]})
    day_rows = pl.DataFrame({"a": [None, 1.0], "b": [float("inf"), 2.0]}, schema={"a": pl.Float64, "b": pl.Float64})
    found = {f["item"]: f for f in audit.day_rows_findings("T", day_rows, before, specs)}
    assert found["T:finite"]["status"] == "problem" and "'b': 1" in found["T:finite"]["detail"]
    assert found["T:nulls"]["status"] == "problem" and "25.0%" in found["T:nulls"]["detail"]
    # A session with no master row is a problem; a weekend is not.
    stored = Lake(root=str(lake))
    assert [f["status"] for f in audit.feature_findings(stored, dt.date(2024, 7, 1))] == ["problem"]
    assert [f["status"] for f in audit.feature_findings(stored, dt.date(2024, 6, 29))] == ["ok"]


def test_implausible_forecasts_and_non_positive_prices_are_problems():
    row = _prediction(-0.5, 0.5) | {"forecast_return": 0.2, "lower_90_price": 0.0}
    found = {f["item"]: f for f in audit.prediction_findings(pl.DataFrame([row]), {("ZL", "1w"): 0.01})}
    assert found["ZL 1w:plausible"]["status"] == "problem" and "0.1000" in found["ZL 1w:plausible"]["detail"]
    assert found["ZL 1w:prices_positive"]["status"] == "problem"
    assert found["ZL 1w:interval_contains_point"]["status"] == "ok"
    ok = audit.prediction_findings(pl.DataFrame([row | {"forecast_return": 0.099}]), {("ZL", "1w"): 0.01})
    assert [f["status"] for f in ok if f["item"] == "ZL 1w:plausible"] == ["ok"]


def test_the_days_predictions_are_its_daily_origins_and_its_globex_session():
    at = [
        dt.datetime(2024, 6, 28, tzinfo=UTC),
        dt.datetime(2024, 6, 27, 23, 0, tzinfo=UTC),
        dt.datetime(2024, 6, 27, 20, 0, tzinfo=UTC),
        dt.datetime(2024, 6, 27, tzinfo=UTC),
    ]
    history = pl.DataFrame({"asset": ["ZL", "MES", "MES", "MES"], "horizon": ["1w", "5min", "5min", "1d"], "as_of": at})
    rows = audit.day_predictions(history.with_columns(pl.col("as_of").dt.convert_time_zone("America/New_York")), DAY)
    # 23:00 UTC on the 27th is in the Globex session of the 28th; 20:00 UTC (15:00 Chicago) is not.
    assert rows["as_of"].to_list() == at[:2]
