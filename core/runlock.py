"""One writer per run folder.

Two ``reasonrl run`` of one config at once would delete each other's live stage folders
and leave a saved config that describes neither. A run holds an OS lock on
``<run>/.run.lock`` for its whole length: exclusive when it may start, restart or remove any
stage; shared when all it has left are stages built for several workers at once (a study's
claim protocol), so such workers run side by side while a ``--force`` waits for none of them.
The OS drops the lock when its holder exits or dies, so a dead process never blocks a later
run. Each holder writes ``<run>/.run.holders/<host>-<pid>.json`` so a refusal can name it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from reasonrl.core.errors import ReasonRLError

LOCK_FILE = ".run.lock"
HOLDERS_DIR = ".run.holders"


class RunFolderBusy(ReasonRLError):
    """Another process is running in this run folder."""


class RunLock:
    """Context manager: take the run folder's lock (``shared`` or exclusive) or fail at once
    naming who holds it."""

    def __init__(self, run_dir: Path, shared: bool = False) -> None:
        self.run_dir, self.shared = Path(run_dir), shared
        self.handle = None
        self.note = self.run_dir / HOLDERS_DIR / f"{socket.gethostname()}-{os.getpid()}.json"

    def __enter__(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.run_dir / LOCK_FILE, "a+b")
        try:
            fcntl.flock(self.handle, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            wanted = "alongside" if self.shared else "while"
            raise RunFolderBusy(
                f"run folder {self.run_dir} is in use by {describe_holders(self.run_dir)}; this run cannot start "
                f"{wanted} it. Wait for it to finish (or stop it), or give this run another run_name or output_dir. "
                f"Nothing was changed.") from None
        self.note.parent.mkdir(exist_ok=True)
        if not self.shared:  # notes of holders that died without cleaning up
            for stale in self.note.parent.glob("*.json"):
                stale.unlink(missing_ok=True)
        mode = "shared" if self.shared else "exclusive"
        self.note.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "mode": mode,
                                         "started": time.time()}), encoding="utf-8")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.note.unlink(missing_ok=True)
        finally:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()


def describe_holders(run_dir: Path) -> str:
    """``pid 123 on host h (exclusive) since 2026-12-02 06:40:00``, one per holder still noted."""
    found = []
    for path in sorted((Path(run_dir) / HOLDERS_DIR).glob("*.json")):
        try:
            holder = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if holder.get("host") == socket.gethostname() and not _alive(holder.get("pid")):
            continue
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
        found.append(f"pid {holder.get('pid')} on host {holder.get('host')} ({holder.get('mode')}) since {since}")
    return "; ".join(found) or "another process (not yet noted)"


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except PermissionError:  # alive, another user's
        return True
    except (OSError, TypeError, ValueError):
        return False
    return True
