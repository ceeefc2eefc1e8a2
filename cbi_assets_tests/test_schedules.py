"""The jobs, schedules and the evening cycle: what each job selects, when the schedules run, what Dagster's automation
builds once the day is ingested (and what it leaves alone), and the alert when a run of the cycle fails."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from cbi_assets.catalogue import EXCHANGE_TIMEZONE, MES, ZL
from cbi_assets.partitions import REGIME_PARTITIONS, horizon_partitions
from cbi_assets.raw.datasets import RAW_DATASETS
from schedules import JOBS, SCHEDULES, SENSORS
from schedules.automation import cycle_failure_alert

DAY = "2026-11-20"  # a Friday with a settlement
THANKSGIVING = "2026-11-26"


def code_location(lake: Path) -> dg.Definitions:
    """Every asset, job, schedule and sensor of the code location, on a lake and warehouse under `lake`."""
    from cbi_assets.definitions import defs
    from cbi_assets.settings import Settings
    from resources import build_resources

    settings = Settings.from_env(
        {"CBI_LAKE": str(lake), "CBI_SOURCE": "sample", "CBI_SAMPLE_END": DAY, "CBI_MODELS": str(lake / "Models")}
    )
    return dg.Definitions(
        assets=list(defs.assets), jobs=JOBS, schedules=SCHEDULES, sensors=SENSORS, resources=build_resources(settings)
    )


@pytest.fixture(scope="module")
def location(tmp_path_factory) -> dg.Definitions:
    return code_location(tmp_path_factory.mktemp("lake"))


def selected(location: dg.Definitions, job: str) -> set[str]:
    return {k.to_user_string() for k in location.resolve_job_def(job).asset_layer.selected_asset_keys}


# --- Jobs ---------------------------------------------------------------------------------------


def test_ingest_jobs_take_each_raw_partition_definition(location):
    years, mes = (selected(location, f"ingest_{n}") for n in ("market_years", "mes_years"))
    assert years | mes == {d.key.to_user_string() for d in RAW_DATASETS.values()} and not years & mes
    assert {"zl/raw/zl_ohlcv_1d", "mes/raw/es_ohlcv_1d", "shared/raw/fred_dgs10"} <= years
    assert {"mes/raw/mes_ohlcv_1d", "mes/raw/mes_ohlcv_1m", "mes/raw/mes_tbbo"} <= mes
    assert location.resolve_job_def("ingest_market_years").partitions_def.get_partition_keys()[:2] == ["2000", "2001"]
    assert location.resolve_job_def("ingest_mes_years").partitions_def.get_partition_keys()[0] == "2019"


def test_validate_retrain_specialists_and_audit_jobs(location):
    for market in (ZL, MES):
        m, horizons = market.key, horizon_partitions(market).get_partition_keys()
        assert selected(location, f"{m}_validate") == {f"{m}/monitoring/validation"}
        assert selected(location, f"{m}_retrain") == {
            f"{m}/{k}"
            for k in (
                "training/labels",
                "training/sets",
                "training/folds",
                "models/references",
                "models/statistical",
                "models/trees",
                "models/neural",
                "models/leaderboard",
                "models/ensemble",
                "models/explanations",
                "predictions/forecast",
                "predictions/upload",
            )
        }
        for job in ("validate", "retrain"):
            assert location.resolve_job_def(f"{m}_{job}").partitions_def.get_partition_keys() == horizons
        assert selected(location, f"{m}_specialists") == {f"{m}/models/specialists"}
        assert location.resolve_job_def(f"{m}_specialists").partitions_def == REGIME_PARTITIONS
    assert selected(location, "audit") == {"monitoring/audit"}


# --- Schedules ----------------------------------------------------------------------------------


def _at(day: str, hour: int, minute: int) -> dt.datetime:
    from zoneinfo import ZoneInfo

    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(hour, minute), ZoneInfo(EXCHANGE_TIMEZONE))


def _context(location, day: str, hour: int, minute: int) -> dg.ScheduleEvaluationContext:
    return dg.build_schedule_context(
        scheduled_execution_time=_at(day, hour, minute), repository_def=location.get_repository_def()
    )


def test_the_evening_ingest_refreshes_the_partition_of_the_day_on_exchange_days_only(location):
    schedules = {s.name: s for s in SCHEDULES}
    for name, key in (("market_years", "2026"), ("mes_years", "2026")):
        schedule = schedules[f"evening_ingest_{name}"]
        assert schedule.job_name == f"ingest_{name}"
        assert schedule.cron_schedule == "30 17 * * 1-5" and schedule.execution_timezone == EXCHANGE_TIMEZONE
        [request] = schedule.evaluate_tick(_context(location, DAY, 17, 30)).run_requests
        assert request.partition_key == key and request.tags["cbi/cycle"] == DAY
        assert request.run_key == f"ingest:ingest_{name}:{DAY}"
        holiday = schedule.evaluate_tick(_context(location, THANKSGIVING, 17, 30))
        assert not holiday.run_requests and "holiday" in holiday.skip_message


def test_daily_validation_validates_every_horizon_on_exchange_days(location):
    schedules = {s.name: s for s in SCHEDULES}
    for market in (ZL, MES):
        horizons = horizon_partitions(market).get_partition_keys()
        schedule = schedules[f"{market.key}_daily_validation"]
        assert schedule.job_name == f"{market.key}_validate" and schedule.cron_schedule == "30 18 * * 1-5"
        requests = schedule.evaluate_tick(_context(location, DAY, 18, 30)).run_requests
        assert [r.partition_key for r in requests] == horizons
        assert [r.run_key for r in requests] == [f"validate:{market.key}:{h}:{DAY}" for h in horizons]
        result = schedule.evaluate_tick(_context(location, THANKSGIVING, 18, 30))
        assert not result.run_requests and THANKSGIVING in result.skip_message


# --- The evening cycle by automation --------------------------------------------------------------


def _requested(location: dg.Definitions, instance, cursor=None):
    result = dg.evaluate_automation_conditions(defs=location, instance=instance, cursor=cursor)
    keys = {
        k.to_user_string() for k in location.resolve_asset_graph().get_all_asset_keys() if result.get_num_requested(k)
    }
    return result, keys


def _stored(instance, key: str, partitions: list[str] | None = None) -> None:
    """Dagster's record of a materialization, as a run would leave it (nothing is written to the lake)."""
    for partition in partitions or [None]:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(dg.AssetKey.from_user_string(key), partition=partition)
        )


@pytest.mark.integration
def test_after_the_ingest_automation_builds_the_features_then_the_forecasts_but_never_trains(location):
    graph = location.resolve_asset_graph()
    every = {k.to_user_string() for k in graph.get_all_asset_keys()}
    with dg.instance_for_test() as instance:
        # A lake with everything built once: raw years from 2016 (the sample's history; the years before it are
        # never materialized), features, models, forecasts.
        for key in every:
            node = graph.get(dg.AssetKey.from_user_string(key))
            partitions = node.partitions_def
            if partitions == REGIME_PARTITIONS:
                continue
            keys = partitions.get_partition_keys() if partitions else None
            if isinstance(partitions, dg.TimeWindowPartitionsDefinition):
                keys = [year for year in keys if year >= "2016"]
            _stored(instance, key, keys)
        result, requested = _requested(location, instance)
        assert not requested, requested  # nothing changed since: nothing to do
        # The evening ingest stores this year's ZL daily bars.
        _stored(instance, "zl/raw/zl_ohlcv_1d", ["2026"])
        result, requested = _requested(location, instance, result.cursor)
        assert {"zl/raw/roll_calendar", "lake/raw_inventory", "zl/features/continuous_1d"} <= requested
        assert not any(k.split("/")[1] in ("training", "models", "predictions") for k in requested), requested
        # Once the features are built, the regime state and today's forecasts of every horizon follow.
        for key in requested:
            _stored(instance, key)
        for key in ("zl/features/master_1d", "shared/features/volatility"):
            _stored(instance, key)
        result, requested = _requested(location, instance, result.cursor)
        assert {"zl/regimes/state", "zl/predictions/forecast", "zl/predictions/upload"} <= requested
        forecast = dg.AssetKey.from_user_string("zl/predictions/forecast")
        assert result.get_num_requested(forecast) == len(horizon_partitions(ZL).get_partition_keys())
        assert not any(k.split("/")[1] in ("training", "models") for k in requested), requested


def test_a_failed_run_of_the_cycle_raises_one_alert(location):
    @dg.asset(key=["zl", "raw", "broken"])
    def broken():
        raise dg.Failure("the source answered 503")

    def alert(instance, result):
        with dg.build_run_status_sensor_context(
            sensor_name=cycle_failure_alert.name,
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            resources=location.resources,
        ) as context:
            return cycle_failure_alert(context.for_run_failure())

    with dg.instance_for_test() as instance:
        failed = dg.materialize([broken], instance=instance, tags={"cbi/cycle": DAY}, raise_on_error=False)
        alert(instance, failed)
        alert(instance, failed)  # the same failure again: recorded once
        skipped = alert(instance, dg.materialize([broken], instance=instance, raise_on_error=False))
    assert "not part of the evening cycle" in str(skipped)
    with duckdb.connect(location.resources["warehouse"].database, read_only=True) as conn:
        alerts = conn.sql("select severity, message from monitoring.alerts where kind = 'daily_cycle'").fetchall()
    assert len(alerts) == 1 and alerts[0][0] == "error" and failed.run_id[:8] in alerts[0][1]
