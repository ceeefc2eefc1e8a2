"""The project's Dagster instance records a single-run backfill completely, in one go."""

import shutil
from pathlib import Path

import dagster as dg

PROJECT = Path(__file__).resolve().parents[1]
DAYS = dg.DailyPartitionsDefinition(start_date="2000-01-01")


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run(),
          check_specs=[dg.AssetCheckSpec("whole_batch", asset="probe")])
def probe(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"days": len(context.partition_keys)},
        check_results=[dg.AssetCheckResult(check_name="whole_batch", passed=True)],
    )


def project_instance(tmp_path, monkeypatch) -> dg.DagsterInstance:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / ".dagster" / "dagster.yaml", home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return dg.DagsterInstance.get()


def test_a_range_run_records_every_partition_and_one_check_execution(tmp_path, monkeypatch):
    instance = project_instance(tmp_path, monkeypatch)
    assert type(instance.event_log_storage).__name__ == "BatchedSqliteEventLogStorage"
    tags = {"dagster/asset_partition_range_start": "2000-01-01", "dagster/asset_partition_range_end": "2003-12-31"}
    result = dg.materialize([probe], instance=instance, tags=tags)
    assert result.success
    materialized = instance.get_materialized_partitions(probe.key)
    assert len(materialized) == 1461 and min(materialized) == "2000-01-01" and max(materialized) == "2003-12-31"
    latest = instance.get_latest_materialization_event(probe.key)
    assert latest.dagster_event.partition == "2003-12-31" and latest.run_id == result.run_id
    assert latest.asset_materialization.metadata["days"].value == 1461
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(probe.key, "whole_batch"), limit=10
    )
    assert [(r.run_id, r.status.value) for r in history] == [(result.run_id, "SUCCEEDED")]

    # A later run over part of the range adds to the same history.
    again = dg.materialize([probe], instance=instance, partition_key="2001-06-01")
    assert again.success and len(instance.get_materialized_partitions(probe.key)) == 1461
    assert instance.get_latest_materialization_event(probe.key).run_id == again.run_id
    instance.dispose()


def test_the_project_instance_limits_the_gpu_pool_to_one(tmp_path, monkeypatch):
    instance = project_instance(tmp_path, monkeypatch)
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    instance.dispose()
