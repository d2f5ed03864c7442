"""One writer per run folder.

Two ``reasonrl run`` of one config at once would delete each other's live stage folders
and leave a saved config that describes neither. The run holds an OS file lock on
``<run>/.run.lock`` for its whole length; the OS drops the lock when the holder exits or
dies, so a stale lock of a dead process never blocks a later run. Who holds it (pid, host,
start time) is written beside it so the refusal can name the holder.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from filelock import FileLock, Timeout

from reasonrl.core.errors import ReasonRLError

LOCK_FILE = ".run.lock"
HOLDER_FILE = ".run.holder.json"


class RunFolderBusy(ReasonRLError):
    """Another process is running in this run folder."""


class RunLock:
    """Context manager: take the run folder's lock or fail at once naming its holder."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.lock = FileLock(str(self.run_dir / LOCK_FILE), timeout=0)

    def __enter__(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire()
        except Timeout:
            raise RunFolderBusy(f"run folder {self.run_dir} is in use by {describe_holder(self.run_dir)}; wait for "
                                f"it to finish (or stop it), or give this run another run_name or output_dir. "
                                f"Nothing was changed.") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        (self.run_dir / HOLDER_FILE).write_text(json.dumps(holder), encoding="utf-8")
        return self

    def __exit__(self, *exc) -> None:
        try:
            (self.run_dir / HOLDER_FILE).unlink(missing_ok=True)
        finally:
            self.lock.release()


def describe_holder(run_dir: Path) -> str:
    """``pid 123 on host h since 2026-12-02 06:40:00`` (or what is known of it)."""
    try:
        holder = json.loads((Path(run_dir) / HOLDER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "another process (its pid is not recorded yet)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on host {holder.get('host')} since {since}"
