"""Several processes on one study: each point is claimed by the worker that trains it."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

CLAIM = "claim.json"


WORKER_POLL_SECONDS = 30.0


def claim_point(folder: Path) -> bool:
    """Take the point in ``folder`` for this process: True unless a live worker holds it.

    Several ``reasonrl run`` processes on one study share its points this way: each trains the
    first point nobody holds. A claim left by a process that died (same host, no such pid) is
    taken over; one from another host is trusted until it is removed."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CLAIM
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    for _ in range(2):
        try:
            with open(path, "x", encoding="utf-8") as handle:
                handle.write(mine)
            return True
        except FileExistsError:
            if not claim_is_dead(path):
                return False
            path.unlink(missing_ok=True)
    return False


def claim_is_dead(path: Path) -> bool:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # being written, or removed just now: look again next time
        return False
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
