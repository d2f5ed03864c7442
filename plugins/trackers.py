"""Metric trackers: append-only JSON lines and TensorBoard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Mapping

from reasonrl.plugins.params import JsonlParams, TensorboardParams


class JsonlTracker:
    """One JSON object per log call: step, wall time, metrics."""

    def __init__(self, params: JsonlParams) -> None:
        self.params = params
        self._handle = None

    def open(self, run_dir: Path) -> None:
        self._handle = open(Path(run_dir) / self.params.filename, "a", encoding="utf-8")

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        self._handle.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class TensorboardTracker:
    """Scalars to TensorBoard event files (needs the ``tensorboard`` extra)."""

    def __init__(self, params: TensorboardParams) -> None:
        self.params = params
        self._writer = None

    def open(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(Path(run_dir) / self.params.subdir))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
