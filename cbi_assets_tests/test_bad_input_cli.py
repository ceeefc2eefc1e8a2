"""Bad input and faults through the documented CLI (`dagster asset materialize` on a folder of files): the
run fails, its last line says what, where and what to do, and the lake is byte for byte what it was."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import zstandard

from cbi_assets.sample.writer import dbn_path
from resources.sample_source import SampleSource

pytestmark = pytest.mark.integration

DAGSTER = str(Path(sys.executable).with_name("dagster"))
PROJECT = Path(__file__).resolve().parents[1]
FRED = "date,value\n2024-03-04,4.10\n2024-03-05,.\n2024-03-06,4.12\n"


@pytest.fixture
def desk(tmp_path):
    """A folder of files, a lake and a Dagster home of their own."""
    local, lake, home = tmp_path / "files", tmp_path / "lake", tmp_path / "dagster"
    for folder in (local / "fred", lake, home):
        folder.mkdir(parents=True)
    (local / "fred" / "DGS10.csv").write_text(FRED)
    env = {
        **os.environ,
        "CBI_SOURCE": "local",
        "CBI_LOCAL_DIR": str(local),
        "CBI_LAKE": str(lake),
        "CBI_MODELS": str(tmp_path / "models"),
        "CBI_END": "2024-03-08",
        "DAGSTER_HOME": str(home),
    }
    shutil.copy(PROJECT / ".dagster" / "dagster.yaml", home)
    return local, lake, env


def materialize(env: dict, select: str, partition: str) -> subprocess.CompletedProcess:
    command = [DAGSTER, "asset", "materialize", "-m", "cbi_assets.definitions", "--select", select]
    command += ["--partition", partition]
    return subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=300)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under the lake with its bytes (lock files aside: they hold nothing)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"}


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_an_impossible_value_fails_the_run_naming_the_line_and_leaves_the_lake_as_it_was(desk):
    local, lake, env = desk
    assert materialize(env, "shared/raw/fred_dgs10", "2024").returncode == 0
    before = snapshot(lake)
    (local / "fred" / "DGS10.csv").write_text(FRED + "2024-03-07,inf\n")
    result = materialize(env, "shared/raw/fred_dgs10", "2024")
    assert result.returncode != 0
    assert "BetaWarning" not in result.stderr  # no warning flood before the cause
    last = last_line(result)
    assert last.startswith("shared__raw__fred_dgs10 failed: ") and "DGS10.csv: fred_dgs10" in last
    assert "(columns value; the first at line 5, 2024-03-07)" in last and "Nothing was written." in last
    assert "line 5, 2024-03-07: value = inf is not a finite number" in result.stderr
    assert snapshot(lake) == before


def test_a_dbn_file_cut_short_fails_the_run_naming_the_offset_and_stores_nothing(desk, tmp_path):
    local, lake, env = desk
    sample = SampleSource(
        cache_dir=str(tmp_path / "sample"), end="2024-03-08", start="2024-01-02", intraday_sessions=5, tick_sessions=1
    )
    whole = dbn_path(sample.folder(), "ZL.FUT", "ohlcv-1d")
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(whole.read_bytes()), read_across_frames=True).read()
    cut = dbn_path(local, "ZL.FUT", "ohlcv-1d")
    cut.parent.mkdir(parents=True)
    cut.write_bytes(zstandard.ZstdCompressor().compress(raw[:-20]))  # the last record loses 20 of its bytes
    before = snapshot(lake)
    result = materialize(env, "zl/raw/zl_ohlcv_1d", "2024")
    assert result.returncode != 0
    last = last_line(result)
    assert last.startswith("zl__raw__zl_ohlcv_1d failed: ") and "ZL.FUT.ohlcv-1d.dbn.zst" in last
    assert f"stop in the middle of a record at byte {len(raw) - 56:,}" in last
    assert "the last of its " in last and " complete records is from 2024-03-0" in last and "download it again" in last
    assert snapshot(lake) == before


def test_an_empty_file_and_an_absent_folder_say_what_to_do(desk, tmp_path):
    local, lake, env = desk
    assert materialize(env, "shared/raw/fred_dgs10", "2024").returncode == 0
    before = snapshot(lake)
    (local / "fred" / "DGS10.csv").write_text("")
    last = last_line(materialize(env, "shared/raw/fred_dgs10", "2024"))
    assert last.endswith(
        "DGS10.csv: the file is empty; it needs the header date,value and one row per date. "
        "Download it again, or remove it."
    )
    nowhere = tmp_path / "no-such-folder"
    last = last_line(materialize({**env, "CBI_LOCAL_DIR": str(nowhere)}, "shared/raw/fred_dgs10", "2024"))
    assert last.endswith(
        f"{nowhere}: the folder of local files does not exist. Set CBI_LOCAL_DIR to a folder with "
        "daily/, fred/ and dbn/ inside (the layout of shared/data/real), or pick another source with "
        "CBI_SOURCE."
    )
    assert snapshot(lake) == before


def test_an_unknown_partition_lists_the_valid_ones(desk):
    _, _, env = desk
    result = materialize(env, "zl/training/labels", "2w")
    assert result.returncode != 0
    assert last_line(result) == (
        "partition '2w' is not one of zl/training/labels's: 1w, 1m, 3m, 6m, 12m. Pick one of them "
        "(--partition) or a range of them (--partition-range FIRST...LAST)."
    )


def _descendants(pid: int) -> set[int]:
    """The processes below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_backfill_stops_its_steps_fails_its_run_and_the_next_run_cleans_up(tmp_path, monkeypatch, how):
    lake, home = tmp_path / "lake", tmp_path / "dagster"
    home.mkdir()
    shutil.copy(PROJECT / ".dagster" / "dagster.yaml", home)
    env = {
        **os.environ,
        "CBI_SOURCE": "sample",
        "CBI_LAKE": str(lake),
        "CBI_MODELS": str(tmp_path / "models"),
        "CBI_SAMPLE_START": "2012-01-03",
        "CBI_SAMPLE_END": "2024-06-28",
        "DAGSTER_HOME": str(home),
    }
    command = [DAGSTER, "asset", "materialize", "-m", "cbi_assets.definitions", "--select"]
    command += ["tag:raw_partitions=market_years", "--partition-range", "2012...2024"]
    cli = subprocess.Popen(command, env=env, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in cli.stdout:  # wait until a step is storing days: the middle of the backfill
            if "stored 1,000 of" in line:
                break
        else:
            pytest.fail("the backfill ended before it stored anything")
        steps = _descendants(cli.pid)
        assert steps, "the run's steps run in processes of their own"
        os.kill(cli.pid, how)
        cli.wait(timeout=30)
        # A generous bound: an orphaned step would run on for minutes, a loaded machine takes a few seconds.
        deadline = time.monotonic() + 60
        while any(_alive(p) for p in steps) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in steps if _alive(p)], "a step of the killed run is still running after 60 s"
    finally:
        cli.kill()
        cli.stdout.close()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        (record,) = instance.get_run_records()
        assert record.dagster_run.status == dg.DagsterRunStatus.FAILURE
        (failure,) = instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        if how == signal.SIGKILL:  # the steps say why; a terminated CLI says it itself
            assert "is gone: it was killed or crashed" in failure.message

    again = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not [p for p in lake.rglob("*") if p.name.startswith(".incoming-")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
def test_stopping_cbi_run_stops_the_steps_it_started(tmp_path, monkeypatch):
    """`kill` (SIGTERM) of `cbi run` reaches only its own process; the `dagster asset materialize` of each
    running step must stop with it, not go on writing the lake with nobody waiting."""
    home = tmp_path / "dagster"
    env = {
        **os.environ,
        "CBI_LAKE": str(tmp_path / "lake"),
        "CBI_MODELS": str(tmp_path / "models"),
        "CBI_SAMPLE_START": "2012-01-03",
        "CBI_SAMPLE_END": "2024-06-28",
        "DAGSTER_HOME": str(home),
    }
    command = [str(Path(sys.executable).with_name("cbi")), "run", "--source", "sample"]
    cli = subprocess.Popen(command, env=env, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in cli.stdout:  # a step of the raw phase is storing days
            if "stored 1,000 of" in line:
                break
        else:
            pytest.fail("the raw phase ended before it stored anything")
        below = _descendants(cli.pid)
        assert below, "each step runs in a process of its own"
        os.kill(cli.pid, signal.SIGTERM)
        rest = cli.stdout.read()
        assert cli.wait(timeout=120) == 128 + signal.SIGTERM
        assert "stopping the running steps" in rest
        # cbi waits for its steps before it exits, and their own steps follow them (the step CLI's watch).
        deadline = time.monotonic() + 60
        while any(_alive(p) for p in below) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in below if _alive(p)], "a step of the stopped cbi run is still running"
    finally:
        cli.kill()
        cli.stdout.close()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records()
        assert records and all(r.dagster_run.status == dg.DagsterRunStatus.FAILURE for r in records)


FIRST_USE = """
import sys
from cbi_assets.cli import create_stores
from cbi_assets.settings import Settings
create_stores(Settings.from_env(), sys.argv[1])
"""


@pytest.mark.parametrize("attempt", range(3))
def test_two_runs_at_once_on_new_stores_both_start(tmp_path, attempt):
    """A new Dagster home and a new MLflow store, first used by two processes at the same moment."""
    env = {**os.environ, "CBI_MODELS": str(tmp_path / "models"), "CBI_LAKE": str(tmp_path / "lake")}
    home = str(tmp_path / "dagster")
    both = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_USE, home], env=env, cwd=PROJECT, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in both]
    for process in both:
        process.stderr.close()
    assert [code for code, _ in results] == [0, 0], [err[-1500:] for _, err in results]
