"""The team deployment, for real: Dagster's storage, the warehouse and MLflow's store on a throwaway
PostgreSQL, a Redis broker, the team's MLflow server, and two Celery workers (concurrency 1 each) started
with README's commands. The same ZL model layer (two horizons, through the leaderboard) runs on it and on the
embedded default, and must agree; then a worker dies mid-step, and two prediction runs race for one day.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import psycopg2
import pytest
from polars.testing import assert_frame_equal

from cbi_assets.settings import PROJECT_ROOT
from cbi_assets_tests import servers
from cbi_assets_tests.conftest import lake_resources

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(servers.missing() is not None, reason=str(servers.missing())),
]

HORIZONS = ("1w", "1m")
RANGE = f"{HORIZONS[0]}...{HORIZONS[-1]}"
# The ZL model layer through the leaderboard, with the Reptile meta-learner: two steps of the `gpu` pool.
MODELS = '(tag:stage=train and key:"zl/models/*") or key:"zl/models/reptile"'
GPU_STEPS = {"zl__models__neural", "zl__models__reptile"}
LEADERBOARD = ["horizon", "family", "rank", "mase", "directional_accuracy", "dm_p_value", "crowned"]
BIN = str(Path(sys.executable).parent)


def _materialize(env: dict[str, str], select: str, log: Path, check: bool = True) -> subprocess.CompletedProcess:
    command = ["dagster", "asset", "materialize", "-m", "cbi_assets.definitions", "--select", select]
    with open(log, "w") as out:
        done = subprocess.run(
            [*command, "--partition-range", RANGE],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1800,
        )
    if check:
        assert done.returncode == 0, f"{select} failed; see {log}:\n{log.read_text()[-3000:]}"
    return done


def _prerequisites(feature_lake, root: Path) -> Path:
    """The sample's feature lake carried through ZL's training sets, folds, meta tasks and regime state for two
    horizons, in process, with the embedded default."""
    lake = root / "prepared"
    shutil.copytree(feature_lake[0], lake)
    from cbi_assets.regimes.assets import REGIME_ASSETS
    from cbi_assets.training.assets import TRAINING_ASSETS

    resources = lake_resources(lake, mlflow=root / "prepared_mlflow")
    instance = dg.DagsterInstance.ephemeral()
    tags = {"dagster/asset_partition_range_start": HORIZONS[0], "dagster/asset_partition_range_end": HORIZONS[-1]}
    assert dg.materialize([a for a in REGIME_ASSETS if a.key.path[0] == "shared"], resources=resources).success
    for layer in (TRAINING_ASSETS, REGIME_ASSETS):
        zl = [a for a in layer if a.key.path[0] == "zl" and a.partitions_def is not None]
        assert dg.materialize(zl, resources=resources, instance=instance, tags=tags).success
    return lake


def _base_env(lake: Path, models: Path, home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CBI_", "DAGSTER_"))}
    return {
        **env,
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "DAGSTER_HOME": str(home),
        "CBI_LAKE": str(lake),
        "CBI_MODELS": str(models),
        "CBI_SOURCE": "sample",
    }


@pytest.fixture(scope="module")
def deployment(feature_lake, tmp_path_factory):
    """The embedded default's and the team deployment's runs of the same model layer, with the team's servers
    and workers still up for the tests that follow."""
    root = tmp_path_factory.mktemp("team")
    prepared = _prerequisites(feature_lake, root)

    embedded = _base_env(root / "embedded_lake", root / "embedded_models", root / "embedded_home")
    shutil.copytree(prepared, embedded["CBI_LAKE"])
    shutil.copy(PROJECT_ROOT / ".dagster" / "dagster.yaml", embedded["DAGSTER_HOME"])
    _materialize(embedded, MODELS, root / "embedded.log")

    team = _base_env(root / "shared" / "lake", root / "shared" / "models", root / "team_home")
    shutil.copytree(prepared, team["CBI_LAKE"])
    shutil.copy(PROJECT_ROOT / "deploy" / "dagster.yaml", team["DAGSTER_HOME"])
    with (
        servers.postgres(root / "pg", ("dagster", "warehouse", "mlflow")) as urls,
        servers.redis(root / "redis") as broker,
    ):
        team |= {
            "CBI_DAGSTER_PG_URL": urls["dagster"].replace("postgresql://", "postgresql+psycopg2://"),
            "CBI_WAREHOUSE_URL": urls["warehouse"],
            "CBI_CELERY_BROKER": f"{broker}/0",
            "CBI_CELERY_BACKEND": f"{broker}/1",
            "DAGSTER_EVENT_BATCH_SIZE": "100",
        }
        mlflow_store = urls["mlflow"].replace("postgresql://", "postgresql+psycopg2://")
        with servers.mlflow_server(mlflow_store, root / "shared" / "mlflow", team, root / "mlflow.log") as tracking:
            team["CBI_MLFLOW_URI"] = tracking
            with (
                # Both take the gpu queue, so only the pool keeps two networks from training at once.
                servers.celery_worker("gpu1", "dagster,gpu", team, root / "gpu1.log", PROJECT_ROOT) as one,
                servers.celery_worker("gpu2", "dagster,gpu", team, root / "gpu2.log", PROJECT_ROOT) as two,
            ):
                _materialize(team, MODELS, root / "team.log")
                yield {
                    "root": root,
                    "embedded": embedded,
                    "team": team,
                    "warehouse": urls["warehouse"],
                    "workers": {"gpu1": one, "gpu2": two},
                    "run": _last_run(team).run_id,
                }
    # The two lakes and model stores are GB; the logs stay for a failure's reading.
    for folder in ("embedded_lake", "embedded_models", "shared"):
        shutil.rmtree(root / folder, ignore_errors=True)


@contextlib.contextmanager
def _instance(env: dict[str, str]) -> Iterator[dg.DagsterInstance]:
    """The team's Dagster instance, read from this process as the web server would."""
    before = os.environ.get("CBI_DAGSTER_PG_URL")
    os.environ["CBI_DAGSTER_PG_URL"] = env["CBI_DAGSTER_PG_URL"]
    try:
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            yield instance
    finally:
        if before is None:
            del os.environ["CBI_DAGSTER_PG_URL"]
        else:
            os.environ["CBI_DAGSTER_PG_URL"] = before


def _last_run(env: dict[str, str]) -> dg.DagsterRun | None:
    with _instance(env) as instance:
        runs = instance.get_runs(limit=1)
    return runs[0] if runs else None


def _events(env: dict[str, str], run_id: str) -> list[dg.EventLogEntry]:
    with _instance(env) as instance:
        return list(instance.all_logs(run_id))


def _worker_of_steps(events) -> dict[str, str]:
    """Each step's Celery worker, from the engine event its worker reports when it takes the step."""
    found = {}
    for event in events:
        if not event.dagster_event or event.dagster_event.event_type_value != "ENGINE_EVENT":
            continue
        data = event.dagster_event.engine_event_data
        if data is not None and "Celery worker" in data.metadata:
            found[event.step_key] = data.metadata["Celery worker"].value
    return found


def _embedded_leaderboard(env: dict[str, str]) -> pl.DataFrame:
    with duckdb.connect(str(Path(env["CBI_LAKE"]) / "warehouse.duckdb"), read_only=True) as conn:
        return conn.sql(f"select {', '.join(LEADERBOARD)} from models.leaderboard where asset = 'ZL'").pl()


def _postgres(url: str, query: str) -> pl.DataFrame:
    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(query)
        return pl.DataFrame(cursor.fetchall(), schema=[c.name for c in cursor.description], orient="row")


def _team_leaderboard(url: str) -> pl.DataFrame:
    return _postgres(url, f"select {', '.join(LEADERBOARD)} from models.leaderboard where asset = 'ZL'")


def _same(left: pl.DataFrame, right: pl.DataFrame) -> None:
    order = ["horizon", "family"]
    left, right = left.sort(order), right.sort(order)
    assert left.height == right.height > 0
    for column in LEADERBOARD:
        a, b = left[column].to_list(), right[column].to_list()
        if left[column].dtype.is_float():
            assert all(x == pytest.approx(y, rel=1e-9, abs=1e-12) for x, y in zip(a, b, strict=True)), column
        else:
            assert a == b, column


def test_steps_ran_on_both_workers_and_the_leaderboard_equals_the_embedded_one(deployment):
    events = _events(deployment["team"], deployment["run"])
    workers = _worker_of_steps(events)
    assert {name.split("@")[0] for name in workers.values()} == {"gpu1", "gpu2"}
    # The networks went to the gpu queue, everything else to the default one.
    queues = {
        event.step_key: event.user_message.rsplit('"', 2)[-2]
        for event in events
        if event.user_message.startswith("Submitting celery task")
    }
    assert {step for step, queue in queues.items() if queue == "gpu"} == GPU_STEPS
    assert set(queues.values()) == {"gpu", "dagster"}
    _same(_team_leaderboard(deployment["warehouse"]), _embedded_leaderboard(deployment["embedded"]))


def test_no_two_gpu_steps_overlapped(deployment):
    events = _events(deployment["team"], deployment["run"])
    spans = collections.defaultdict(dict)
    for event in events:
        kind = event.dagster_event.event_type_value if event.dagster_event else None
        if event.step_key in GPU_STEPS and kind in ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE"):
            spans[event.step_key]["start" if kind == "STEP_START" else "end"] = event.timestamp
    assert spans.keys() == GPU_STEPS and all(len(s) == 2 for s in spans.values())
    (a, b) = sorted(spans.values(), key=lambda s: s["start"])
    assert a["end"] <= b["start"], f"gpu steps overlapped: {dict(spans)}"


def _lake_files(lake: Path) -> dict[str, float]:
    return {str(p.relative_to(lake)): p.stat().st_mtime for p in lake.rglob("*") if p.is_file()}


def _temporaries(lake: Path) -> list[str]:
    return [str(p.relative_to(lake)) for p in lake.rglob(".incoming-*")]


# The run a worker dies in: one step of tens of seconds on the sample, so that nothing else waits on the worker.
KILLED = 'key:"zl/models/statistical"'
LONG_STEPS = ("zl__models__statistical",)


def _in_progress(env: dict[str, str], before: str) -> tuple[str, str] | None:
    """(worker, step): a long step a worker has started and not finished in the newest run (not `before`)."""
    latest = _last_run(env)
    if latest is None or latest.run_id == before:
        return None
    events = _events(env, latest.run_id)
    kinds = collections.defaultdict(set)
    for event in events:
        if event.dagster_event:
            kinds[event.step_key].add(event.dagster_event.event_type_value)
    for step, worker in _worker_of_steps(events).items():
        if step in LONG_STEPS and "STEP_START" in kinds[step] and not kinds[step] & {"STEP_SUCCESS", "STEP_FAILURE"}:
            return worker.split("@")[0], step
    return None


def test_a_worker_killed_mid_step_fails_the_run_cleanly_and_a_retry_succeeds(deployment):
    team, root = deployment["team"], deployment["root"]
    lake = Path(team["CBI_LAKE"])
    log = root / "killed.log"
    command = ["dagster", "asset", "materialize", "-m", "cbi_assets.definitions", "--select", KILLED]
    with open(log, "w") as out:
        run = subprocess.Popen(
            [*command, "--partition-range", RANGE], cwd=PROJECT_ROOT, env=team, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        # Wait for a worker to be in the middle of a long step, then kill the process running it, as the kernel's
        # OOM killer would. The process is stopped first, so that the step cannot finish between the look at
        # its events and the kill.
        pools = {name: servers.descendants(worker.pid)[-1] for name, worker in deployment["workers"].items()}
        victim = None
        deadline = time.monotonic() + 600
        while victim is None and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.5)
            busy = _in_progress(team, deployment["run"])
            if busy is None:
                continue
            os.kill(pools[busy[0]], signal.SIGSTOP)
            try:
                victim = _in_progress(team, deployment["run"])
            finally:
                os.kill(pools[busy[0]], signal.SIGKILL if victim == busy else signal.SIGCONT)
            victim = victim if victim == busy else None
        assert victim is not None, f"no worker ran {LONG_STEPS} long enough; see {log}"
        assert run.wait(timeout=600) != 0
    finally:
        if run.poll() is None:
            run.kill()
    killed = _last_run(team)
    assert killed.status == dg.DagsterRunStatus.FAILURE
    assert "WorkerLostError" in log.read_text(), f"the failure does not say the worker was lost; see {log}"
    # What the lake holds is whole: every table reads (a temporary file of the killed step waits for the next
    # writer of its folder, which removes it).
    for table in lake.rglob("*.parquet"):
        if not table.name.startswith(".incoming-"):
            pl.read_parquet_schema(table)

    _materialize(team, KILLED, root / "retry.log")
    assert _last_run(team).status == dg.DagsterRunStatus.SUCCESS
    assert _temporaries(lake) == []
    # Every family's walk-forward metrics are the embedded default's (to float rounding).
    embedded = Path(deployment["embedded"]["CBI_LAKE"])
    metrics = sorted(p.relative_to(embedded) for p in embedded.rglob("ZL/models/by_horizon/*/metrics/*.parquet"))
    assert metrics
    for path in metrics:
        assert_frame_equal(
            pl.read_parquet(lake / path).drop("run_id"), pl.read_parquet(embedded / path).drop("run_id"), rel_tol=1e-9
        )


def test_two_prediction_runs_at_once_leave_one_row_per_key(deployment):
    team, root = deployment["team"], deployment["root"]
    tags = f'{{"dagster/asset_partition_range_start": "{HORIZONS[0]}", "dagster/asset_partition_range_end": "{HORIZONS[-1]}"}}'
    command = ["dagster", "job", "execute", "-m", "cbi_assets.definitions", "-j", "zl_predict", "--tags", tags]
    runs = []
    for i in range(2):
        out = open(root / f"predict_{i}.log", "w")  # noqa: SIM115 - closed below, once the run is done
        runs.append((subprocess.Popen(command, cwd=PROJECT_ROOT, env=team, stdout=out, stderr=subprocess.STDOUT), out))
    for process, out in runs:
        code = process.wait(timeout=900)
        out.close()
        assert code == 0, f"a prediction run failed; see {out.name}:\n{Path(out.name).read_text()[-3000:]}"
    history = _postgres(deployment["warehouse"], "select asset, horizon, as_of, model_version from predictions.history")
    assert history.height > 0
    assert set(history["horizon"]) == set(HORIZONS)
    assert not history.is_duplicated().any()
    latest = _postgres(deployment["warehouse"], "select * from predictions.vw_zl_1w_latest")
    assert latest.height == 1
