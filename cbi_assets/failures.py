"""The last line of a failed `dagster asset materialize`: what failed, where, and what to do.

Dagster's CLI ends a failed run with "Error: Materialization failed." after the stack traces, so the cause
sits somewhere above. When this process is that CLI, a handler that runs as it exits finds the runs it
orchestrated and prints, last, the cause of each failed step: the last line of the innermost error, which
in this project always says what was wrong, where, and what to do (cbi_assets.raw.errors).
"""

from __future__ import annotations

import atexit
import datetime as dt
import itertools
import multiprocessing
import os
import re
import sys

import dagster as dg

# `cbi run` asks for the lines in a file too, to repeat them after its own summary.
FAILURE_FILE = "CBI_FAILURE_FILE"


def report_causes_at_exit() -> None:
    """Register the exit handler, in the `dagster asset materialize` process only (not its steps)."""
    if multiprocessing.parent_process() is None and sys.argv[1:3] == ["asset", "materialize"]:
        atexit.register(_print_causes, dt.datetime.now(dt.UTC))


def _print_causes(started: dt.datetime) -> None:
    try:
        lines = _unknown_partitions(sys.argv)
        if not lines:
            with dg.DagsterInstance.get() as instance:
                runs = _runs_of_this_process(instance, started)
                lines = [line for run in runs for line in failure_causes(instance, run)]
    except Exception:  # the run's own logs stay the full account; this line is a courtesy
        return
    if not lines:
        return
    print("\n".join(lines), file=sys.stderr, flush=True)
    if os.environ.get(FAILURE_FILE):
        with open(os.environ[FAILURE_FILE], "a") as out:
            out.write("\n".join(lines) + "\n")


def _unknown_partitions(argv: list[str]) -> list[str]:
    """Dagster refuses a partition key its assets lack without naming the ones they have: name them."""
    options = dict(itertools.pairwise(argv))
    asked = [options[o] for o in ("--partition",) if o in options]
    if "--partition-range" in options:
        asked += options["--partition-range"].split("...")
    definitions = sys.modules.get("cbi_assets.definitions")
    if not asked or "--select" not in options or definitions is None:
        return []
    graph = definitions.defs.resolve_asset_graph()
    keys = dg.AssetSelection.from_coercible(options["--select"].split(",")).resolve(graph)
    for key in sorted(keys):
        partitions = graph.get(key).partitions_def
        if partitions is None:
            continue
        valid = partitions.get_partition_keys()
        for partition in asked:
            if partition not in valid:
                shown = ", ".join(valid) if len(valid) <= 20 else f"{valid[0]} to {valid[-1]} ({len(valid)} keys)"
                return [
                    f"partition {partition!r} is not one of {key.to_user_string()}'s: {shown}. Pick one of them "
                    "(--partition) or a range of them (--partition-range FIRST...LAST)."
                ]
    return []


def _runs_of_this_process(instance: dg.DagsterInstance, started: dt.datetime) -> list[str]:
    """Failed runs created since this process started whose steps this process ran (the multiprocess
    executor names its pid in the run's engine events)."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], created_after=started), limit=20
    )
    pid = str(os.getpid())
    ours = []
    for record in records:
        for entry in instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            data = entry.dagster_event.engine_event_data if entry.dagster_event else None
            pids = {str(v.value) for k, v in (data.metadata if data else {}).items() if k == "pid"}
            if pid in pids:
                ours.append(record.dagster_run.run_id)
                break
    return ours


def failure_causes(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """One line per failed step of a run: `<step> failed: <cause>`, the first failure last."""
    lines = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        error = event.step_failure_data.error if event and event.step_failure_data else None
        # Past Dagster's wrappers ("Error occurred while executing op ...") to the project's own error, not
        # further: its cause is the library error it explains (a DBNError under a RawDataError).
        while error is not None and error.cls_name.startswith("Dagster") and error.cause is not None:
            error = error.cause
        cause = _last_line(error.message) if error is not None else "no error was recorded"
        lines.append(f"{event.step_key} failed: {cause}")
    if not lines:
        # A step whose process died records no failure of its own; the run's failure says what is known.
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE):
            lines.append(f"run {run_id[:8]} failed: {_last_line(entry.message or '')}")
    return lines[::-1]


def _last_line(message: str) -> str:
    text = [line.strip() for line in message.strip().splitlines() if line.strip()]
    last = text[-1] if text else message
    # Dagster writes an error as "module.Class: message"; the class adds nothing a person needs.
    head, _, rest = last.partition(": ")
    return rest if rest and _ERROR_CLASS.fullmatch(head) else last


_ERROR_CLASS = re.compile(r"([a-z_][\w]*\.)+[A-Z]\w*")  # cbi_assets.raw.errors.RawDataError
