"""Throwaway PostgreSQL and Redis servers for the team deployment's tests and benchmarks: Debian's
`postgresql` (initdb and pg_ctl on a free port in a temporary folder) and `redis-server`, each
stopped when its block ends. `.ci/run` installs the packages where they are missing; without them
the tests that need a server skip and say which package to install.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

PG_USER = "cbi"  # the cluster's superuser; trust authentication on 127.0.0.1 only


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server programs (the newest version installed), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def missing() -> str | None:
    """Why the servers cannot start here, or None when they can."""
    if postgres_bin() is None:
        return "PostgreSQL's server is not installed (Debian: apt-get install postgresql; .ci/run does)"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian: apt-get install redis-server; .ci/run does)"
    return None


def _as_server_user(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: as root, the cluster runs as Debian's `postgres` user.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _wait_for(port: int, what: str, log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not accept connections on 127.0.0.1:{port} in {seconds:.0f}s; see {log}")


@contextlib.contextmanager
def postgres(folder: Path, databases: tuple[str, ...] = ("cbi",)) -> Iterator[dict[str, str]]:
    """A PostgreSQL cluster in `folder` on a free port, with `databases` created; yields their URLs
    ({name: postgresql://cbi@127.0.0.1:<port>/<name>}). The cluster is stopped and its folder removed after."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError(missing())
    folder.mkdir(parents=True, exist_ok=True)
    data, log = folder / "data", folder / "postgres.log"
    if os.geteuid() == 0:
        server = pwd.getpwnam("postgres")
        os.chown(folder, server.pw_uid, server.pw_gid)
        folder.chmod(0o700)
        for parent in folder.parents:  # the server user must be able to reach its folder
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o711)
    port = free_port()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync"]
    start = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"]
    try:
        for command in (initdb, start):
            done = subprocess.run(_as_server_user(command), capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(
                    f"{Path(command[0]).name} failed ({done.returncode}): {done.stderr.strip()}; see {log}"
                )
        _wait_for(port, "PostgreSQL", log)
        import psycopg2

        admin = psycopg2.connect(host="127.0.0.1", port=port, user=PG_USER, dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cursor:
            for name in databases:
                cursor.execute(f'create database "{name}"')
        admin.close()
        yield {name: f"postgresql://{PG_USER}@127.0.0.1:{port}/{name}" for name in databases}
    finally:
        subprocess.run(
            _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def redis(folder: Path) -> Iterator[str]:
    """A Redis server on a free port (no persistence); yields its URL, redis://127.0.0.1:<port>."""
    folder.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), folder / "redis.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(port, "Redis", log)
        yield f"redis://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _stop_group(process: subprocess.Popen) -> None:
    """Stop a process started in a session of its own, and every process it started."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # the workers' pool children, which outlive their parent
        os.killpg(process.pid, signal.SIGKILL)


def _wait_for_line(log: Path, text: str, process: subprocess.Popen, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"{what} stopped (exit {process.returncode}); see {log}")
        time.sleep(0.2)
    raise RuntimeError(f"{what} was not ready in {seconds:.0f}s; see {log}")


@contextlib.contextmanager
def celery_worker(name: str, queues: str, env: dict[str, str], log: Path, cwd: Path) -> Iterator[subprocess.Popen]:
    """A Celery worker of the team deployment with concurrency 1, started with README's command; yields its
    process (the `dagster-celery` command, leader of a session with the worker and its pool child)."""
    command = ["dagster-celery", "worker", "start", "-A", "dagster_celery.app", "-y", "deploy/celery.yaml"]
    command += ["-q", queues, "-n", name, "--", "--concurrency", "1"]
    with open(log, "w") as out:
        worker = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_for_line(log, f"{name}@{socket.gethostname()} ready", worker, f"Celery worker {name}")
        yield worker
    finally:
        _stop_group(worker)


@contextlib.contextmanager
def mlflow_server(backend_url: str, artifacts: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """The team's MLflow tracking server: its store in PostgreSQL, its artifacts in `artifacts` (the shared
    volume); yields its URL."""
    port = free_port()
    command = ["mlflow", "server", "--backend-store-uri", backend_url, "--artifacts-destination", str(artifacts)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log, "w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_line(log, "Application startup complete", server, "MLflow server", seconds=180)
        _wait_for(port, "MLflow server", log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop_group(server)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, parents before children (from /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(0), [])
        found += children
        todo += children
    return found
