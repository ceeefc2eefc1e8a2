"""The code location loads, and its partitions, instance and schedules are what the desk expects; it uses only
Dagster's public API."""

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


def test_every_raw_dataset_is_a_year_partitioned_asset_with_checks():
    graph = defs.resolve_asset_graph()
    for dataset in RAW_DATASETS.values():
        node = graph.get(dataset.key)
        partitions = node.partitions_def
        assert isinstance(partitions, dg.TimeWindowPartitionsDefinition)
        assert node.backfill_policy == dg.BackfillPolicy.single_run()
        first = partitions.get_first_partition_key()
        assert first == ("2019" if dataset.symbol == "MES" else "2000"), dataset.name
    checks = {key.name for key in graph.asset_check_keys if key.asset_key == RAW_DATASETS["zl_ohlcv_1d"].key}
    assert checks == {"schema", "no_duplicates", "in_order", "no_gaps"}


def test_mes_has_no_partition_before_it_listed():
    mes = defs.resolve_asset_graph().get(RAW_DATASETS["mes_ohlcv_1m"].key).partitions_def
    assert not mes.has_partition_key("2018")
    assert mes.has_partition_key("2019")


def test_horizon_assets_show_one_partition_per_valid_asset_and_horizon():
    graph = defs.resolve_asset_graph()
    for market, horizons in {
        "zl": ["1w", "1m", "3m", "6m", "12m"],
        "mes": ["1min", "5min", "15min", "30min", "1h", "4h", "1d", "7d", "30d", "3m", "6m", "12m"],
    }.items():
        for key in (
            f"{market}/regimes/state",
            f"{market}/training/labels",
            f"{market}/training/folds",
            f"{market}/models/trees",
            f"{market}/models/leaderboard",
        ):
            assert graph.get(dg.AssetKey.from_user_string(key)).partitions_def.get_partition_keys() == horizons, key


def test_neural_training_runs_one_job_at_a_time_in_the_gpu_pool():
    import yaml

    graph = defs.resolve_asset_graph()
    pools = {key.to_user_string(): graph.get(key).pools for key in graph.get_all_asset_keys() if "models" in key.path}
    assert pools["zl/models/neural"] == {"gpu"} and pools["mes/models/neural"] == {"gpu"}
    assert not pools["zl/models/trees"]
    instance = yaml.safe_load((PROJECT / ".dagster" / "dagster.yaml").read_text())
    assert instance["concurrency"]["pools"]["default_limit"] == 1


@pytest.mark.integration
def test_dagster_validates_the_code_location():
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        env={**os.environ, "CBI_SOURCE": "sample"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful" in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("when", "expected"),
    [(dt.datetime(2024, 3, 5, 17, 30), "2024"), (dt.datetime(2024, 3, 29, 17, 30), None)],
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


def test_the_code_uses_only_public_dagster_apis():
    private = [
        f"{path.relative_to(PROJECT)}:{n}"
        for folder in ("cbi_assets", "resources", "schedules")
        for path in (PROJECT / folder).rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "dagster._" in line
    ]
    assert not private, private
