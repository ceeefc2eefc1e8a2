"""A run's step processes stop with the process that runs them.

Dagster's multiprocess executor runs each step in a child process. When the process above it dies (the
`dagster asset materialize` process killed, the run worker of the web UI crashed), nothing stops that
child: it would write to the end of its range with nobody to record it, and the run would show STARTED
for ever. So each step watches its parent; once the parent is gone it marks the run failed, saying why,
and exits at once. The temporary files it had open are removed by the next writer of their folder
(cbi_assets.temporary); what it had published is complete, as every publication is atomic.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg

POLL_SECONDS = 0.5
_watching = threading.Event()


def follow_parent(instance: dg.DagsterInstance | None, run: dg.DagsterRun | None) -> None:
    """In a step's child process: stop, and mark `run` failed, once the process that started it is gone.
    Outside one (a test materializing in process, a sensor) it does nothing."""
    if run is None or instance is None or multiprocessing.parent_process() is None or _watching.is_set():
        return
    _watching.set()
    parent = os.getppid()
    threading.Thread(target=_watch, args=(instance, run, parent), name="cbi-follow-parent", daemon=True).start()


def _watch(instance: dg.DagsterInstance, run: dg.DagsterRun, parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    message = (
        f"The process that ran this run's steps (pid {parent} on {socket.gethostname()}) is gone: it was killed "
        "or crashed, and its steps stopped with it. Materialize the same selection again to finish; files "
        "published before are complete and the next run removes the temporary ones left behind."
    )
    try:
        # Several steps of the run may notice at once: one at a time, and only the first reports.
        with open(Path(tempfile.gettempdir()) / "cbi-run-failures.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = instance.get_run_by_id(run.run_id)
            if current is not None and not current.is_finished:
                instance.report_run_failed(current, message)
    finally:
        os._exit(1)  # at once: the step must not go on writing with nobody to record it
