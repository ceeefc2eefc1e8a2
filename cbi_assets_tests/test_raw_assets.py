"""Raw assets materialized by Dagster on the sample and on files: stored, checked, never overwritten."""

import datetime as dt

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster_duckdb import DuckDBResource

from cbi_assets.raw.assets import RAW_ASSETS, ROLL_CALENDARS, raw_inventory
from cbi_assets.raw.datasets import RAW_DATASETS
from cbi_assets.settings import Settings
from resources import Lake, LocalFilesSource, SampleSource, build_resources

END = "2024-06-28"
ASSETS = {a.key: a for a in RAW_ASSETS}


def asset(name: str) -> dg.AssetsDefinition:
    return ASSETS[RAW_DATASETS[name].key]


def run(assets, resources, first: str, last: str | None = None, *, raise_on_error=True) -> dg.ExecuteInProcessResult:
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last or first}
    return dg.materialize(assets, resources=resources, tags=tags, raise_on_error=raise_on_error)


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory):
    return tmp_path_factory.mktemp("lake")


@pytest.fixture(scope="module")
def sample_resources(lake_root):
    sample = SampleSource(cache_dir=str(lake_root / "sample"), end=END, intraday_sessions=5, tick_sessions=1,
                          trades_per_session=2_000)
    return {"lake": Lake(root=str(lake_root)), "warehouse": DuckDBResource(database=str(lake_root / "warehouse.duckdb")),
            "futures_source": sample, "macro_source": sample, "history_source": sample}


def materialization(result: dg.ExecuteInProcessResult, name: str) -> dict:
    events = result.asset_materializations_for_node(asset(name).node_def.name)
    return events[-1].metadata


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_daily_futures_from_the_sample_are_stored_by_day_with_checks(sample_resources, lake_root):
    result = run([asset("zl_ohlcv_1d")], sample_resources, "2024-01-01", END)
    meta = materialization(result, "zl_ohlcv_1d")
    # 124 sessions in the first half of 2024, each with its two nearest contracts.
    assert meta["days_new"].value == 124 and meta["rows"].value == 248
    found = checks(result)
    assert set(found) == {"schema", "no_duplicates", "in_order", "no_gaps"}
    assert all(c.passed for c in found.values()), {k: c.description for k, c in found.items()}
    stored = Lake(root=str(lake_root)).raw(RAW_DATASETS["zl_ohlcv_1d"])
    assert len(stored.days()) == 124 and (lake_root / "ZL" / "raw" / "zl_ohlcv_1d" / "date=2024-03-05").is_dir()
    bars = stored.read().collect()
    assert {"ts_event", "instrument_id", "open", "close", "volume", "symbol", "ingested_at"} <= set(bars.columns)
    assert bars["close"].is_between(20, 120).all()  # cents per pound


def test_materializing_again_changes_nothing(sample_resources, lake_root):
    store = Lake(root=str(lake_root)).raw(RAW_DATASETS["fred_dgs10"])
    run([asset("fred_dgs10")], sample_resources, "2024-01-01", END)
    before = {v.day: (v.path.name, v.path.stat().st_mtime_ns) for v in store.latest_versions()}
    again = run([asset("fred_dgs10")], sample_resources, "2024-01-01", END)
    meta = materialization(again, "fred_dgs10")
    assert meta["days_new"].value == 0 and meta["days_revised"].value == 0 and meta["days_unchanged"].value == len(before)
    assert {v.day: (v.path.name, v.path.stat().st_mtime_ns) for v in store.latest_versions()} == before


def test_mes_intraday_records_follow_globex_trade_dates(sample_resources, lake_root):
    window = SampleSource(**sample_resources["futures_source"].model_dump()).coverage(RAW_DATASETS["mes_ohlcv_1m"])
    first, last = (d.isoformat() for d in window)
    result = run([asset("mes_ohlcv_1m"), asset("mes_definition")], sample_resources, first, last)
    assert materialization(result, "mes_ohlcv_1m")["days_new"].value == 5
    found = checks(result)
    assert found["no_gaps"].passed and found["no_duplicates"].passed
    assert "minute_holes" in found["no_gaps"].metadata
    bars = Lake(root=str(lake_root)).raw(RAW_DATASETS["mes_ohlcv_1m"]).read(dt.date.fromisoformat(last)).collect()
    chicago = bars["ts_event"].dt.convert_time_zone("America/Chicago")
    # The last session opens at 17:00 the evening before and closes at 16:00, with the halt between.
    assert chicago.min().time() == dt.time(17, 0) and chicago.max().time() == dt.time(15, 59)
    assert not chicago.dt.hour().is_in([16]).any()

    ticks = SampleSource(**sample_resources["futures_source"].model_dump()).coverage(RAW_DATASETS["mes_trades"])
    result = run([asset("mes_trades"), asset("mes_tbbo"), asset("mes_mbp_10")], sample_resources,
                 *(d.isoformat() for d in ticks))
    assert all(c.passed for c in checks(result).values() if c.check_name == "schema")
    tbbo = Lake(root=str(lake_root)).raw(RAW_DATASETS["mes_tbbo"]).read().collect()
    assert (tbbo["bid_px_00"] < tbbo["ask_px_00"]).all() and tbbo["ts_recv"].is_not_null().all()


def test_roll_calendar_finds_the_volume_crossovers(sample_resources, lake_root):
    run([asset("es_ohlcv_1d")], sample_resources, "2019-05-06", END)
    run([asset("mes_ohlcv_1d")], sample_resources, "2019-05-06", END)
    run([asset(name) for name in ("zl_ohlcv_1d", "zs_ohlcv_1d", "zm_ohlcv_1d", "cl_ohlcv_1d", "ho_ohlcv_1d")],
        sample_resources, "2022-01-01", END)
    result = dg.materialize([*ROLL_CALENDARS], resources=sample_resources,
                            selection=[a.key for a in ROLL_CALENDARS])
    assert result.success
    rolls = pl.read_parquet(lake_root / "MES" / "raw" / "roll_calendar.parquet")
    es = rolls.filter((pl.col("symbol") == "ES") & pl.col("rolled"))
    assert es.height == 21  # quarterly: Jun 2019 .. Jun 2024
    # E-mini rolls happen in the days before the third Friday of Mar, Jun, Sep and Dec.
    assert set(es["date"].dt.month().to_list()) == {3, 6, 9, 12}
    assert es["date"].dt.day().is_between(5, 21).all()
    cl = pl.read_parquet(lake_root / "ZL" / "raw" / "roll_calendar.parquet").filter((pl.col("symbol") == "CL") & pl.col("rolled"))
    assert 25 <= cl.height <= 31  # crude rolls every month


def test_inventory_lists_what_the_lake_holds_in_the_warehouse(sample_resources, lake_root):
    result = dg.materialize([raw_inventory], resources=sample_resources, selection=[raw_inventory.key])
    assert result.success
    with duckdb.connect(str(lake_root / "warehouse.duckdb"), read_only=True) as conn:
        inventory = conn.sql("select * from lake.raw_inventory").pl()
    assert inventory.height == len(RAW_DATASETS)
    zl = inventory.filter(pl.col("dataset") == "zl_ohlcv_1d").row(0, named=True)
    assert zl["days"] >= 124 and zl["records"] == 2 * zl["days"] and zl["revised_days"] == 0


HEADER = "date,open,high,low,close,volume,open_interest\n"
ROWS = ["2024-03-04,45,46,44,45.5,10,5", "2024-03-05,45,46,44,45.7,10,5", "2024-03-06,45,46,44,45.9,10,5"]


def test_a_restated_day_becomes_a_new_version_and_a_failed_run_loses_nothing(tmp_path):
    files = tmp_path / "files"
    (files / "daily").mkdir(parents=True)
    csv = files / "daily" / "ZL.csv"
    source = LocalFilesSource(root=str(files))
    resources = {"lake": Lake(root=str(tmp_path / "lake")), "futures_source": source}
    store = resources["lake"].raw(RAW_DATASETS["zl_ohlcv_1d"])

    csv.write_text(HEADER + "\n".join(ROWS) + "\n")
    assert materialization(run([asset("zl_ohlcv_1d")], resources, "2024-03-04", "2024-03-06"), "zl_ohlcv_1d")["days_new"].value == 3

    csv.write_text(HEADER + "\n".join([ROWS[0], ROWS[1].replace("45.7", "45.8"), ROWS[2]]) + "\n")
    meta = materialization(run([asset("zl_ohlcv_1d")], resources, "2024-03-04", "2024-03-06"), "zl_ohlcv_1d")
    assert meta["days_revised"].value == 1 and meta["revised"].value == ["2024-03-05"]
    versions = store.versions(dt.date(2024, 3, 5))
    assert [pl.read_parquet(v.path)["close"].item() for v in versions] == [45.7, 45.8]

    stored = {v.path: v.path.read_bytes() for v in store.latest_versions()}
    csv.write_text(HEADER + "\n".join([ROWS[0], "2024-03-05,45,46,44,oops,10,5", ROWS[2]]) + "\n")
    failed = run([asset("zl_ohlcv_1d")], resources, "2024-03-04", "2024-03-06", raise_on_error=False)
    assert not failed.success
    error = failed.get_step_failure_events()[0].event_specific_data.error
    assert "column 'close' is not a number at line 3: 'oops'" in error.cause.message if error.cause else error.message
    assert {v.path: v.path.read_bytes() for v in store.latest_versions()} == stored
    assert store.read().collect()["close"].to_list() == [45.5, 45.8, 45.9]


def test_a_real_source_without_its_key_fails_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABENTO_API_KEY", raising=False)
    monkeypatch.delenv("FRED_API_KEY", raising=False)
    settings = Settings.from_env({"CBI_SOURCE": "live", "CBI_LAKE": str(tmp_path), "CBI_SAMPLE_END": END})
    result = run([asset("zl_ohlcv_1d")], build_resources(settings), "2024-03-04", raise_on_error=False)
    assert not result.success
    message = str(result.get_step_failure_events()[0].event_specific_data.error)
    assert "DATABENTO_API_KEY is not set" in message and "CBI_SOURCE=sample" in message


def test_keys_stay_out_of_metadata_and_config(tmp_path, monkeypatch):
    monkeypatch.setenv("FRED_API_KEY", "fred-secret-9999")
    resources = build_resources(Settings.from_env({"CBI_SOURCE": "auto", "CBI_LAKE": str(tmp_path), "CBI_SAMPLE_END": END}))
    config = resources["macro_source"]
    assert "fred-secret-9999" not in repr(config.model_dump()) and "FRED_API_KEY" in repr(config.model_dump())
