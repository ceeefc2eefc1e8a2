"""The jobs, schedules and the daily cycle: what each job selects, when the schedules run, and how the cycle sensor
moves a day from ingest to features to predictions, stopping at a failure."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from cbi_assets.catalogue import EXCHANGE_TIMEZONE
from cbi_assets.partitions import HORIZON_PARTITIONS, REGIME_PARTITIONS
from schedules import JOBS, SCHEDULES, SENSORS
from schedules.cycle import cycle_state, daily_cycle_sensor
from schedules.ingest import daily_cycle

DAY = "2026-11-20"  # a Friday with a settlement
THANKSGIVING = "2026-11-26"
ZL_HORIZONS = HORIZON_PARTITIONS["zl"].get_partition_keys()
MES_HORIZONS = HORIZON_PARTITIONS["mes"].get_partition_keys()


def code_location(lake: Path) -> dg.Definitions:
    """Every asset of the code location, the jobs, schedules and sensors, and the resources on a lake and
    warehouse under `lake`."""
    from cbi_assets.definitions import defs
    from cbi_assets.settings import Settings
    from resources import build_resources

    assets = list(defs.assets)
    settings = Settings.from_env({"CBI_LAKE": str(lake), "CBI_SOURCE": "sample", "CBI_SAMPLE_END": DAY,
                                  "CBI_MODELS": str(lake / "Models")})
    return dg.Definitions(assets=assets, jobs=JOBS, schedules=SCHEDULES, sensors=SENSORS,
                          resources=build_resources(settings))


@pytest.fixture(scope="module")
def location(tmp_path_factory) -> dg.Definitions:
    return code_location(tmp_path_factory.mktemp("lake"))


def selected(location: dg.Definitions, job: str) -> set[str]:
    return {k.to_user_string() for k in location.resolve_job_def(job).asset_layer.selected_asset_keys}


# --- Jobs ---------------------------------------------------------------------------------------


def test_daily_features_takes_the_unpartitioned_assets_before_the_models(location):
    keys = selected(location, "daily_features")
    for expected in ("zl/raw/roll_calendar", "mes/raw/roll_calendar", "lake/raw_inventory", "shared/features/macro",
                     "shared/features/cross_asset", "zl/features/continuous_1d", "zl/features/master_1d",
                     "mes/features/master_1min", "features/catalogue", "shared/regimes/calendar"):
        assert expected in keys, expected
    # Downstream of the horizon-partitioned models, partitioned, or on demand: not part of the day's features.
    for left_out in ("shared/models/transfer", "monitoring/audit", "zl/regimes/state", "zl/training/labels",
                     "zl/raw/zl_ohlcv_1d"):
        assert left_out not in keys, left_out
    graph = location.resolve_asset_graph()
    assert all(graph.get(dg.AssetKey.from_user_string(k)).partitions_def is None for k in keys)


def test_predict_validate_retrain_specialists_and_audit_jobs(location):
    for market, horizons in (("zl", ZL_HORIZONS), ("mes", MES_HORIZONS)):
        assert selected(location, f"{market}_predict") == {
            f"{market}/regimes/state", f"{market}/regimes/current", f"{market}/predictions/forecast",
            f"{market}/predictions/upload"}
        assert selected(location, f"{market}_validate") == {f"{market}/monitoring/validation"}
        assert selected(location, f"{market}_retrain") == {
            f"{market}/{k}" for k in ("training/labels", "training/sets", "training/folds", "models/references",
                                      "models/statistical", "models/trees", "models/neural", "models/leaderboard",
                                      "models/ensemble", "models/explanations", "predictions/forecast",
                                      "predictions/upload")}
        for job in ("predict", "validate", "retrain"):
            partitions = location.resolve_job_def(f"{market}_{job}").partitions_def
            assert partitions.get_partition_keys() == horizons
        assert selected(location, f"{market}_specialists") == {f"{market}/models/specialists"}
        assert location.resolve_job_def(f"{market}_specialists").partitions_def == REGIME_PARTITIONS
    assert selected(location, "audit") == {"monitoring/audit"}
    assert {j.name for j in JOBS} >= {"ingest_market_days", "ingest_mes_days"}


# --- Schedules ----------------------------------------------------------------------------------


def _at(day: str, hour: int, minute: int) -> dt.datetime:
    from zoneinfo import ZoneInfo

    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(hour, minute), ZoneInfo(EXCHANGE_TIMEZONE))


def test_daily_cycle_starts_the_ingest_on_exchange_days_only(location):
    context = dg.build_schedule_context(scheduled_execution_time=_at(DAY, 17, 30),
                                        repository_def=location.get_repository_def())
    result = daily_cycle.evaluate_tick(context)
    [request] = result.run_requests
    assert request.partition_key == DAY
    assert request.run_key == f"ingest:ingest_market_days:{DAY}"
    assert request.tags["cbi/cycle"] == DAY
    assert daily_cycle.job_name == "ingest_market_days"
    assert daily_cycle.cron_schedule == "30 17 * * 1-5" and daily_cycle.execution_timezone == EXCHANGE_TIMEZONE

    holiday = dg.build_schedule_context(scheduled_execution_time=_at(THANKSGIVING, 17, 30),
                                        repository_def=location.get_repository_def())
    result = daily_cycle.evaluate_tick(holiday)
    assert not result.run_requests and "holiday" in result.skip_message


def test_daily_validation_validates_every_horizon_on_exchange_days(location):
    schedules = {s.name: s for s in SCHEDULES}
    for market, horizons in (("zl", ZL_HORIZONS), ("mes", MES_HORIZONS)):
        schedule = schedules[f"{market}_daily_validation"]
        assert schedule.job_name == f"{market}_validate" and schedule.cron_schedule == "30 18 * * 1-5"
        context = dg.build_schedule_context(scheduled_execution_time=_at(DAY, 18, 30),
                                            repository_def=location.get_repository_def())
        requests = schedule.evaluate_tick(context).run_requests
        assert [r.partition_key for r in requests] == horizons
        assert [r.run_key for r in requests] == [f"validate:{market}:{h}:{DAY}" for h in horizons]
        holiday = dg.build_schedule_context(scheduled_execution_time=_at(THANKSGIVING, 18, 30),
                                            repository_def=location.get_repository_def())
        result = schedule.evaluate_tick(holiday)
        assert not result.run_requests and THANKSGIVING in result.skip_message


# --- The cycle ----------------------------------------------------------------------------------


def test_cycle_state_waits_for_every_ingest_and_stops_at_a_failure():
    market = ("ingest_market_days", DAY)
    mes = ("ingest_mes_days", DAY)
    state = cycle_state(DAY, {market: "SUCCESS"})
    assert [s.run_key for s in state.requests] == [f"ingest:ingest_mes_days:{DAY}"] and not state.done
    state = cycle_state(DAY, {market: "SUCCESS", mes: "STARTED"})
    assert not state.requests and not state.done
    state = cycle_state(DAY, {market: "SUCCESS", mes: "SUCCESS"})
    assert [(s.job, s.partition, s.run_key) for s in state.requests] == [("daily_features", None, f"features:{DAY}")]
    state = cycle_state(DAY, {market: "SUCCESS", mes: "FAILURE"})
    assert state.failed == [f"ingest_mes_days[{DAY}]"] and state.done and not state.requests
    state = cycle_state(DAY, {market: "SUCCESS", mes: "SUCCESS", ("daily_features", None): "CANCELED"})
    assert state.failed == ["daily_features"] and not state.requests
    # An older cycle only completes its ingest: the newer one computes the features and predictions.
    state = cycle_state(DAY, {market: "SUCCESS", mes: "SUCCESS"}, newest=False)
    assert state.done and not state.requests


def _run(instance, location, job: str, day: str, status: dg.DagsterRunStatus, partition: str | None = None):
    """A run record as the run launcher leaves it: job, status, the cycle tag and the partition tag."""
    from dagster._core.utils import make_new_run_id

    assert location.resolve_job_def(job).name == job
    tags = {"cbi/cycle": day, **({"dagster/partition": partition} if partition else {})}
    return instance.add_run(dg.DagsterRun(job_name=job, run_id=make_new_run_id(), status=status, tags=tags))


def _tick(instance, location, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=location,
                                 resources=location.resources) as context:
        return daily_cycle_sensor.evaluate_tick(context)


def test_cycle_sensor_moves_a_day_from_ingest_to_features_to_predictions(location):
    success = dg.DagsterRunStatus.SUCCESS
    with dg.instance_for_test() as instance:
        assert "no daily cycle" in _tick(instance, location).skip_message
        _run(instance, location, "ingest_market_days", DAY, success, DAY)
        result = _tick(instance, location)
        [request] = result.run_requests
        assert (request.job_name, request.partition_key, request.run_key) == (
            "ingest_mes_days", DAY, f"ingest:ingest_mes_days:{DAY}")
        assert request.tags["cbi/cycle"] == DAY

        _run(instance, location, "ingest_mes_days", DAY, dg.DagsterRunStatus.STARTED, DAY)
        result = _tick(instance, location)
        assert not result.run_requests and "1 running" in result.skip_message

        _run(instance, location, "ingest_mes_days", DAY, success, DAY)  # the newest run of a step counts
        [request] = _tick(instance, location).run_requests
        assert (request.job_name, request.partition_key, request.run_key) == ("daily_features", None, f"features:{DAY}")
        assert request.tags["cbi/cycle"] == DAY

        _run(instance, location, "daily_features", DAY, success)
        result = _tick(instance, location)
        expected = [("zl_predict", h, f"predict:zl:{h}:{DAY}") for h in ZL_HORIZONS] + [
            ("mes_predict", h, f"predict:mes:{h}:{DAY}") for h in MES_HORIZONS]
        assert [(r.job_name, r.partition_key, r.run_key) for r in result.run_requests] == expected
        assert all(r.tags["cbi/cycle"] == DAY for r in result.run_requests)
        assert result.cursor is None  # the day is still open

        for job, partition, _ in expected:
            _run(instance, location, job, DAY, success, partition)
        result = _tick(instance, location)
        assert not result.run_requests and result.cursor == DAY
        assert "complete" in result.skip_message


def test_a_failed_ingest_stops_the_cycle_and_raises_one_alert(location):
    with dg.instance_for_test() as instance:
        _run(instance, location, "ingest_market_days", DAY, dg.DagsterRunStatus.SUCCESS, DAY)
        _run(instance, location, "ingest_mes_days", DAY, dg.DagsterRunStatus.FAILURE, DAY)
        result = _tick(instance, location)
        assert not result.run_requests
        assert "ingest failed" in result.skip_message and result.cursor == DAY
        _tick(instance, location)  # the same failure seen again: no second alert
        with location.resources["warehouse"].get_connection() as conn:
            alerts = conn.execute("select kind, severity from monitoring.alerts where key = ?",
                                  [f"cycle:{DAY}:ingest_mes_days[{DAY}]"]).fetchall()
        assert alerts == [("daily_cycle", "error")]
        # Closed: a later tick does not look at that day again.
        assert "no daily cycle" in _tick(instance, location, cursor=result.cursor).skip_message


def test_an_older_cycle_only_finishes_its_ingest(location):
    older, newer = "2026-11-19", DAY
    with dg.instance_for_test() as instance:
        _run(instance, location, "ingest_market_days", older, dg.DagsterRunStatus.SUCCESS, older)
        _run(instance, location, "ingest_market_days", newer, dg.DagsterRunStatus.SUCCESS, newer)
        result = _tick(instance, location)
        assert [r.run_key for r in result.run_requests] == [f"ingest:ingest_mes_days:{older}",
                                                            f"ingest:ingest_mes_days:{newer}"]
        _run(instance, location, "ingest_mes_days", older, dg.DagsterRunStatus.SUCCESS, older)
        _run(instance, location, "ingest_mes_days", newer, dg.DagsterRunStatus.SUCCESS, newer)
        result = _tick(instance, location)
        assert [r.run_key for r in result.run_requests] == [f"features:{newer}"]
        assert result.cursor == older
