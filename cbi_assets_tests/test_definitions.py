"""The code location loads, and its partitions, instance and schedules are what the desk expects."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from cbi_assets.definitions import defs
from cbi_assets.raw.datasets import RAW_DATASETS
from schedules.ingest import INGEST_SCHEDULES

PROJECT = Path(__file__).resolve().parents[1]


def test_every_raw_dataset_is_a_day_partitioned_asset_with_checks():
    graph = defs.resolve_asset_graph()
    for dataset in RAW_DATASETS.values():
        node = graph.get(dataset.key)
        partitions = node.partitions_def
        assert isinstance(partitions, dg.DailyPartitionsDefinition)
        assert node.backfill_policy == dg.BackfillPolicy.single_run()
        first = partitions.get_first_partition_key()
        assert first == ("2019-05-06" if dataset.symbol == "MES" else "2000-01-01"), dataset.name
    checks = {key.name for key in graph.asset_check_keys if key.asset_key == RAW_DATASETS["zl_ohlcv_1d"].key}
    assert checks == {"schema", "no_duplicates", "in_order", "no_gaps"}


def test_mes_has_no_partition_before_it_listed():
    mes = defs.resolve_asset_graph().get(RAW_DATASETS["mes_ohlcv_1m"].key).partitions_def
    assert not mes.has_partition_key("2019-05-03")
    assert mes.has_partition_key("2019-05-06")


def test_dagster_validates_the_code_location():
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT, capture_output=True, text=True, env={**os.environ, "CBI_SOURCE": "sample"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful" in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("when", "expected"),
    [(dt.datetime(2024, 3, 5, 17, 30), "2024-03-05"), (dt.datetime(2024, 3, 29, 17, 30), None)],
    ids=["trading day", "Good Friday"],
)
def test_evening_ingest_runs_on_trading_days_only(when, expected):
    for schedule in INGEST_SCHEDULES:
        context = dg.build_schedule_context(
            scheduled_execution_time=when.replace(tzinfo=dt.timezone(dt.timedelta(hours=-6))),
            repository_def=defs.get_repository_def(),
        )
        result = schedule.evaluate_tick(context)
        if expected is None:
            assert not result.run_requests and "holiday" in result.skip_message
        else:
            assert [r.partition_key for r in result.run_requests] == [expected]
