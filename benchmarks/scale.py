"""How the team deployment scales: the same model layer on one and on two Celery workers (concurrency 1
each), and how fast each Dagster instance (PostgreSQL, the embedded SQLite) records a long backfill's
partition events.

    .venv/bin/python benchmarks/scale.py [--lake TrainingData] [--select <selection>] [--range 1w...12m]

`--lake` is a lake with training sets and folds (after `cbi demo`, TrainingData/); it is copied, never
changed. Throwaway PostgreSQL and Redis servers (Debian's packages) are started and stopped here.
Prints `workers_1_s= workers_2_s= speedup= events_per_s_postgres= events_per_s_embedded=`.
"""

import argparse
import contextlib
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbi_assets.settings import PROJECT_ROOT
from cbi_assets_tests import servers

# ZL's model layer through the leaderboard: four kinds of families side by side, then the leaderboard.
MODELS = 'tag:stage=train and key:"zl/models/*"'
BACKFILL_DAYS = dg.DailyPartitionsDefinition(start_date="2000-01-01", end_date="2026-01-01")  # 9,497 partitions


def _env(root: Path, lake: Path, urls: dict[str, str], broker: str, tracking: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CBI_", "DAGSTER_"))}
    home = root / "home"
    home.mkdir(exist_ok=True)
    shutil.copy(PROJECT_ROOT / "deploy" / "dagster.yaml", home)
    return env | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "DAGSTER_HOME": str(home),
        "CBI_DAGSTER_PG_URL": urls["dagster"].replace("postgresql://", "postgresql+psycopg2://"),
        "CBI_WAREHOUSE_URL": urls["warehouse"],
        "CBI_CELERY_BROKER": f"{broker}/0",
        "CBI_CELERY_BACKEND": f"{broker}/1",
        "CBI_MLFLOW_URI": tracking,
        "CBI_LAKE": str(lake),
        "CBI_MODELS": str(root / "models"),
        "CBI_SOURCE": "sample",
        "DAGSTER_EVENT_BATCH_SIZE": "100",
    }


def model_layer_seconds(source_lake: Path, workers: int, select: str, partitions: str) -> float:
    """Wall seconds of one `dagster asset materialize` of the selection on `workers` Celery workers, each
    taking both queues (concurrency 1), on a fresh deployment and a copy of the lake."""
    with tempfile.TemporaryDirectory(prefix="cbi-scale-") as folder:
        root = Path(folder)
        lake = root / "lake"
        shutil.copytree(source_lake, lake, ignore=shutil.ignore_patterns("warehouse.duckdb*"))
        with (
            servers.postgres(root / "pg", ("dagster", "warehouse", "mlflow")) as urls,
            servers.redis(root / "redis") as broker,
        ):
            base = _env(root, lake, urls, broker, "")
            store = urls["mlflow"].replace("postgresql://", "postgresql+psycopg2://")
            with servers.mlflow_server(store, root / "artifacts", base, root / "mlflow.log") as tracking:
                env = base | {"CBI_MLFLOW_URI": tracking}
                with contextlib.ExitStack() as stack:
                    for i in range(workers):
                        stack.enter_context(
                            servers.celery_worker(f"w{i + 1}", "dagster,gpu", env, root / f"w{i + 1}.log", PROJECT_ROOT)
                        )
                    command = ["dagster", "asset", "materialize", "-m", "cbi_assets.definitions", "--select", select]
                    start = time.perf_counter()
                    done = subprocess.run(
                        [*command, "--partition-range", partitions], cwd=PROJECT_ROOT, env=env, capture_output=True
                    )
                    seconds = time.perf_counter() - start
                    if done.returncode != 0:
                        raise SystemExit(
                            f"the model layer failed on {workers} worker(s):\n{done.stderr.decode()[-3000:]}"
                        )
                    print(f"  steps (start-end, seconds after the first): {_step_spans(env)}", flush=True)
                    return seconds


def _step_spans(env: dict[str, str]) -> str:
    """Each step's span in the newest run of the team's instance, to see what the wall time waited on."""
    os.environ["CBI_DAGSTER_PG_URL"] = env["CBI_DAGSTER_PG_URL"]
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        run = instance.get_runs(limit=1)[0]
        spans: dict[str, dict[str, float]] = {}
        for event in instance.all_logs(run.run_id):
            kind = event.dagster_event.event_type_value if event.dagster_event else None
            if kind in ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE"):
                spans.setdefault(event.step_key, {})["start" if kind == "STEP_START" else "end"] = event.timestamp
    first = min(s["start"] for s in spans.values())
    return ", ".join(
        f"{step.split('__')[-1]} {s['start'] - first:.0f}-{s['end'] - first:.0f}"
        for step, s in sorted(spans.items(), key=lambda item: item[1]["start"])
    )


@dg.asset(partitions_def=BACKFILL_DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def backfill_probe(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """A raw dataset's backfill without the data: one run over every day, one materialization per day."""
    return dg.MaterializeResult(metadata={"days": len(context.partition_keys)})


def events_per_second(instance: dg.DagsterInstance) -> float:
    """Event log entries the instance stored per wall second while one run backfilled every day."""
    days = BACKFILL_DAYS.get_partition_keys()
    tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
    start = time.perf_counter()
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    result = dg.materialize([backfill_probe], instance=instance, tags=tags, run_config=quiet)
    seconds = time.perf_counter() - start
    assert result.success
    return len(instance.all_logs(result.run_id)) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, default=PROJECT_ROOT / "TrainingData")
    parser.add_argument("--select", default=MODELS)
    parser.add_argument("--range", default="1w...12m", help="the horizons (partition range) of the selection")
    parser.add_argument("--skip-workers", action="store_true", help="measure only the instances' event rates")
    args = parser.parse_args()
    if servers.missing():
        raise SystemExit(servers.missing())
    os.environ["DAGSTER_EVENT_BATCH_SIZE"] = "100"

    figures = {}
    if not args.skip_workers:
        if not (args.lake / "ZL").is_dir():
            raise SystemExit(f"{args.lake} holds no ZL training sets: run `cbi demo` first, or pass --lake")
        print(f"{dt.datetime.now():%H:%M:%S} the model layer ({args.select}, {args.range}) on 1 worker", flush=True)
        one = model_layer_seconds(args.lake, 1, args.select, args.range)
        print(f"{dt.datetime.now():%H:%M:%S} {one:.1f}s; on 2 workers", flush=True)
        two = model_layer_seconds(args.lake, 2, args.select, args.range)
        figures |= {"workers_1_s": f"{one:.1f}", "workers_2_s": f"{two:.1f}", "speedup": f"{one / two:.2f}"}

    with tempfile.TemporaryDirectory(prefix="cbi-events-") as folder:
        root = Path(folder)
        with servers.postgres(root / "pg", ("dagster",)) as urls:
            config = {
                "storage": {
                    "postgres": {"postgres_url": urls["dagster"].replace("postgresql://", "postgresql+psycopg2://")}
                }
            }
            (root / "pg_home").mkdir()
            with dg.instance_for_test(overrides=config, temp_dir=str(root / "pg_home")) as instance:
                figures["events_per_s_postgres"] = f"{events_per_second(instance):.0f}"
        (root / "sqlite_home").mkdir()
        with dg.DagsterInstance.local_temp(str(root / "sqlite_home")) as instance:
            figures["events_per_s_embedded"] = f"{events_per_second(instance):.0f}"
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
