"""Raw assets materialized by Dagster on the sample and on files: stored, checked, never overwritten."""

import datetime as dt

import dagster as dg
import duckdb
import polars as pl
import pytest

from cbi_assets import lake as tables
from cbi_assets.catalogue import MES, ZL
from cbi_assets.lake import Lake, warehouse_file
from cbi_assets.raw.assets import RAW_ASSETS, ROLL_CALENDARS, raw_inventory
from cbi_assets.raw.datasets import RAW_DATASETS
from cbi_assets.raw.partitions import RAW_PARTITIONS, partitions_for, partitions_name
from cbi_assets.settings import Settings
from cbi_assets.warehouse import Warehouse
from resources import LocalFilesSource, SampleSource, build_resources

pytestmark = pytest.mark.integration

END = "2024-06-28"
ASSETS = {a.key: a for a in RAW_ASSETS}


def asset(name: str) -> dg.AssetsDefinition:
    return ASSETS[RAW_DATASETS[name].key]


def run(
    assets,
    resources,
    first: str,
    last: str | None = None,
    *,
    raise_on_error=True,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize raw partitions `first`..`last` (years: "2024")."""
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last or first}
    return dg.materialize(assets, resources=resources, tags=tags, raise_on_error=raise_on_error, instance=instance)


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory):
    return tmp_path_factory.mktemp("lake")


@pytest.fixture(scope="module")
def sample_resources(lake_root):
    sample = SampleSource(
        cache_dir=str(lake_root / "sample"), end=END, intraday_sessions=5, tick_sessions=1, trades_per_session=2_000
    )
    return {
        "lake": Lake(root=str(lake_root)),
        "warehouse": Warehouse(database=str(warehouse_file(lake_root))),
        "futures_source": sample,
        "macro_source": sample,
        "history_source": sample,
    }


def materialization(result: dg.ExecuteInProcessResult, name: str) -> dict:
    events = result.asset_materializations_for_node(asset(name).node_def.name)
    return events[-1].metadata


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_daily_futures_from_the_sample_are_stored_by_day_with_checks(sample_resources, lake_root):
    result = run([asset("zl_ohlcv_1d")], sample_resources, "2024")
    meta = materialization(result, "zl_ohlcv_1d")
    # The year's partition up to the sample's last session: 124 sessions in the first half of 2024, each with
    # its two nearest contracts.
    assert meta["days_new"].value == 124 and meta["rows"].value == 248
    found = checks(result)
    assert set(found) == {"schema", "no_duplicates", "in_order", "no_gaps"}
    assert all(c.passed for c in found.values()), {k: c.description for k, c in found.items()}
    stored = Lake(root=str(lake_root)).raw(RAW_DATASETS["zl_ohlcv_1d"])
    assert len(stored.days()) == 124 and stored.day_dir(dt.date(2024, 3, 5)).is_dir()
    bars = stored.read().collect()
    assert {"ts_event", "instrument_id", "open", "close", "volume", "symbol", "ingested_at"} <= set(bars.columns)
    assert bars["close"].is_between(20, 120).all()  # cents per pound


def test_materializing_again_changes_nothing(sample_resources, lake_root):
    store = Lake(root=str(lake_root)).raw(RAW_DATASETS["fred_dgs10"])
    run([asset("fred_dgs10")], sample_resources, "2024")
    before = {v.day: (v.path.name, v.path.stat().st_mtime_ns) for v in store.latest_versions()}
    again = run([asset("fred_dgs10")], sample_resources, "2024")
    meta = materialization(again, "fred_dgs10")
    assert (
        meta["days_new"].value == 0 and meta["days_revised"].value == 0 and meta["days_unchanged"].value == len(before)
    )
    assert {v.day: (v.path.name, v.path.stat().st_mtime_ns) for v in store.latest_versions()} == before


def test_mes_intraday_records_follow_globex_trade_dates(sample_resources, lake_root):
    _first, last = SampleSource(**sample_resources["futures_source"].model_dump()).coverage(
        RAW_DATASETS["mes_ohlcv_1m"]
    )
    result = run([asset("mes_ohlcv_1m"), asset("mes_definition")], sample_resources, "2024")
    assert materialization(result, "mes_ohlcv_1m")["days_new"].value == 5
    found = checks(result)
    assert found["no_gaps"].passed and found["no_duplicates"].passed
    assert "minute_holes" in found["no_gaps"].metadata
    bars = Lake(root=str(lake_root)).raw(RAW_DATASETS["mes_ohlcv_1m"]).read(last).collect()
    chicago = bars["ts_event"].dt.convert_time_zone("America/Chicago")
    # The last session opens at 17:00 the evening before and closes at 16:00, with the halt between.
    assert chicago.min().time() == dt.time(17, 0) and chicago.max().time() == dt.time(15, 59)
    assert not chicago.dt.hour().is_in([16]).any()

    result = run([asset("mes_trades"), asset("mes_tbbo"), asset("mes_mbp_10")], sample_resources, "2024")
    assert all(c.passed for c in checks(result).values() if c.check_name == "schema")
    tbbo = Lake(root=str(lake_root)).raw(RAW_DATASETS["mes_tbbo"]).read().collect()
    assert (tbbo["bid_px_00"] < tbbo["ask_px_00"]).all() and tbbo["ts_recv"].is_not_null().all()


def test_intraday_records_are_fetched_from_the_last_stored_day_unless_refetched(sample_resources):
    minutes = asset("mes_ohlcv_1m")
    run([minutes], sample_resources, "2024")
    again = materialization(run([minutes], sample_resources, "2024"), "mes_ohlcv_1m")
    assert again["days_unchanged"].value == 1 and again["days_new"].value == 0  # the last stored day, taken again
    tags = {"dagster/asset_partition_range_start": "2024", "dagster/asset_partition_range_end": "2024"}
    whole = dg.materialize(
        [minutes],
        resources=sample_resources,
        tags=tags,
        run_config={"ops": {minutes.node_def.name: {"config": {"refetch": True}}}},
    )
    meta = whole.asset_materializations_for_node(minutes.node_def.name)[-1].metadata
    assert meta["days_unchanged"].value == 5 and meta["days_new"].value == 0


def test_roll_calendar_finds_the_volume_crossovers(sample_resources, lake_root):
    run([asset("es_ohlcv_1d")], sample_resources, "2019", "2024")
    run([asset("mes_ohlcv_1d")], sample_resources, "2019", "2024")
    run(
        [asset(name) for name in ("zl_ohlcv_1d", "zs_ohlcv_1d", "zm_ohlcv_1d", "cl_ohlcv_1d", "ho_ohlcv_1d")],
        sample_resources,
        "2022",
        "2024",
    )
    result = dg.materialize([*ROLL_CALENDARS], resources=sample_resources, selection=[a.key for a in ROLL_CALENDARS])
    assert result.success
    lake = Lake(root=str(lake_root))
    rolls = lake.read(tables.ROLL_CALENDAR, market=MES)
    es = rolls.filter((pl.col("symbol") == "ES") & pl.col("rolled") & (pl.col("date") >= dt.date(2019, 5, 6)))
    assert es.height == 21  # quarterly: Jun 2019 .. Jun 2024
    # E-mini rolls happen in the days before the third Friday of Mar, Jun, Sep and Dec.
    assert set(es["date"].dt.month().to_list()) == {3, 6, 9, 12}
    assert es["date"].dt.day().is_between(5, 21).all()
    cl = lake.read(tables.ROLL_CALENDAR, market=ZL).filter((pl.col("symbol") == "CL") & pl.col("rolled"))
    assert 25 <= cl.height <= 31  # crude rolls every month


def test_inventory_lists_what_the_lake_holds_in_the_warehouse(sample_resources, lake_root):
    result = dg.materialize([raw_inventory], resources=sample_resources, selection=[raw_inventory.key])
    assert result.success
    with duckdb.connect(str(warehouse_file(lake_root)), read_only=True) as conn:
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
    assert materialization(run([asset("zl_ohlcv_1d")], resources, "2024"), "zl_ohlcv_1d")["days_new"].value == 3

    csv.write_text(HEADER + "\n".join([ROWS[0], ROWS[1].replace("45.7", "45.8"), ROWS[2]]) + "\n")
    meta = materialization(run([asset("zl_ohlcv_1d")], resources, "2024"), "zl_ohlcv_1d")
    assert meta["days_revised"].value == 1 and meta["revised"].value == ["2024-03-05"]
    versions = store.versions(dt.date(2024, 3, 5))
    assert [pl.read_parquet(v.path)["close"].item() for v in versions] == [45.7, 45.8]

    stored = {v.path: v.path.read_bytes() for v in store.latest_versions()}
    csv.write_text(HEADER + "\n".join([ROWS[0], "2024-03-05,45,46,44,oops,10,5", ROWS[2]]) + "\n")
    failed = run([asset("zl_ohlcv_1d")], resources, "2024", raise_on_error=False)
    assert not failed.success
    error = failed.get_step_failure_events()[0].event_specific_data.error
    assert "column 'close' is not a number at line 3: 'oops'" in error.cause.message if error.cause else error.message
    assert {v.path: v.path.read_bytes() for v in store.latest_versions()} == stored
    assert store.read().collect()["close"].to_list() == [45.5, 45.8, 45.9]


def test_a_real_source_without_its_key_fails_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABENTO_API_KEY", raising=False)
    monkeypatch.delenv("FRED_API_KEY", raising=False)
    settings = Settings.from_env({"CBI_SOURCE": "live", "CBI_LAKE": str(tmp_path), "CBI_SAMPLE_END": END})
    result = run([asset("zl_ohlcv_1d")], build_resources(settings), "2024", raise_on_error=False)
    assert not result.success
    message = str(result.get_step_failure_events()[0].event_specific_data.error)
    assert "DATABENTO_API_KEY is not set" in message and "CBI_SOURCE=sample" in message


def test_keys_stay_out_of_metadata_and_config(tmp_path, monkeypatch):
    monkeypatch.setenv("FRED_API_KEY", "fred-secret-9999")
    resources = build_resources(
        Settings.from_env({"CBI_SOURCE": "auto", "CBI_LAKE": str(tmp_path), "CBI_SAMPLE_END": END})
    )
    config = resources["macro_source"]
    assert "fred-secret-9999" not in repr(config.model_dump()) and "FRED_API_KEY" in repr(config.model_dump())


def test_a_failed_range_run_marks_its_partitions_failed(tmp_path):
    """On Dagster's stock storage, a run over several years that fails shows each of them as failed."""
    files = tmp_path / "files"
    (files / "daily").mkdir(parents=True)
    (files / "daily" / "ZL.csv").write_text(HEADER + "2023-03-06,45,46,44,45.5,10,5\n2024-03-05,45,46,44,oops,10,5\n")
    resources = {"lake": Lake(root=str(tmp_path / "lake")), "futures_source": LocalFilesSource(root=str(files))}
    zl = asset("zl_ohlcv_1d")
    with dg.instance_for_test() as instance:
        assert not run([zl], resources, "2023", "2024", raise_on_error=False, instance=instance).success
        status = instance.get_status_by_partition(
            zl.key, ["2022", "2023", "2024"], partitions_for(RAW_DATASETS["zl_ohlcv_1d"])
        )
    assert status == {"2022": None, "2023": dg.AssetPartitionStatus.FAILED, "2024": dg.AssetPartitionStatus.FAILED}
    assert not Lake(root=str(tmp_path / "lake")).raw(RAW_DATASETS["zl_ohlcv_1d"]).days()  # nothing stored


def test_a_25_year_backfill_of_every_raw_dataset_records_a_materialization_per_year(sample_folder, tmp_path):
    """Every raw dataset over all its partitions since 2000, on Dagster's stock SQLite storage: what Dagster
    records is one materialization per dataset and year, not per day, which keeps its bookkeeping small
    (`benchmarks/raw_backfill.py` measures how small)."""
    source = LocalFilesSource(root=str(sample_folder))
    resources = {
        "lake": Lake(root=str(tmp_path / "lake")),
        "futures_source": source,
        "macro_source": source,
        "history_source": source,
    }
    partitions = 0
    with dg.instance_for_test() as instance:
        for name, definition in RAW_PARTITIONS.items():
            assets = [a for a in RAW_ASSETS if partitions_name(RAW_DATASETS[a.key.path[-1]]) == name]
            keys = definition.get_partition_keys()
            assert run(assets, resources, keys[0], keys[-1], instance=instance).success
            partitions += len(keys) * len(assets)
        recorded = sum(len(instance.fetch_materializations(a.key, limit=1_000).records) for a in RAW_ASSETS)
    days = sum(len(resources["lake"].raw(d).days()) for d in RAW_DATASETS.values())
    assert recorded == partitions and partitions * 50 < days
