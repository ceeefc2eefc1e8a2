"""Temporary files in the lake: each is named for the host and process writing it, so a file left by a
process that died (a killed run) can be proven an orphan and removed by the next writer of that folder."""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from pathlib import Path

_HOST = socket.gethostname()
# .incoming-<host>-<pid>-<8 hex>[.<suffix>]; host names may hold dashes, the pid and the hex do not.
_TEMPORARY = re.compile(r"^\.incoming-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}(\..*)?$")


def temporary_name(suffix: str) -> str:
    """A hidden name no other process can choose, that says who is writing it."""
    return f".incoming-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.{suffix}"


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries, so a name just given to a file survives a power cut."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def is_orphan(name: str) -> bool:
    """A temporary name whose writer ran on this host and is no longer alive. A writer on another host
    (a shared volume) cannot be seen from here, so its files are left alone."""
    match = _TEMPORARY.match(name)
    if match is None or match["host"] != _HOST:
        return False
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


def remove_orphans(folder: Path) -> list[Path]:
    """Remove the orphaned temporary files and folders directly in `folder`; returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name.startswith(".incoming-") and is_orphan(entry.name):
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed
