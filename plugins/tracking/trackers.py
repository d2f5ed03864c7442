"""Metric trackers: append-only JSON lines, TensorBoard, W&B and MLflow; each also records the resolved config."""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field

from reasonrl.core.config import flatten_config
from reasonrl.core.contracts import current_attempt
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.io import atomic_write_json
from reasonrl.core.registry import Params


class JsonlParams(Params):
    filename: str = "metrics.jsonl"
    """the metrics file in the run folder"""


class TensorboardParams(Params):
    subdir: str = "tensorboard"
    """the folder in the run folder for event files"""


class WandbParams(Params):
    project: str = "reasonrl"
    """the W&B project"""
    entity: str | None = None
    """the W&B team or user (default: yours)"""
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="unset: W&B's own default and WANDB_MODE decide")


class MlflowParams(Params):
    tracking_uri: str | None = Field(None, description="default: ./mlruns in the run folder")
    experiment: str = "reasonrl"
    """the MLflow experiment name"""


class JsonlTracker:
    """One JSON object per log call: step, wall time, attempt, metrics.

    The file is append-only. A resumed stage logs its steps after the checkpoint again,
    under a later ``attempt``; ``read_metrics`` keeps the latest attempt's row per step.
    """

    def __init__(self, params: JsonlParams) -> None:
        self.params = params
        self._handle = None

    def open(self, run_dir: Path) -> None:
        self._path = Path(run_dir) / self.params.filename
        torn = _ends_mid_line(self._path)
        self._handle = open(self._path, "a", encoding="utf-8")
        if torn:  # a killed or disk-full attempt left half a row: this attempt's rows start on a new line
            self._handle.write("\n")
            print(f"    {self._path.name}: its last row was cut off by an earlier attempt; it is skipped when read")

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        row = {"step": step, "time": time.time(), "attempt": current_attempt(), **clean}
        self._handle.write(json.dumps(row) + "\n")
        self._handle.flush()

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Beside the metrics, as ``<name>.config.json``: every line of the metrics file stays a metrics row."""
        atomic_write_json(self._path.with_suffix(".config.json"), dict(config))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a ``jsonl`` tracker file, one per (stage, step): a row logged again by a
    later attempt (a resumed stage replaying steps past its checkpoint) replaces the earlier one."""
    latest: dict[tuple, dict] = {}
    torn = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        try:
            row = json.loads(line)
        except ValueError:  # a row cut off by a kill or a full disk
            torn.append(number)
            continue
        names = sorted(k for k in row if k not in ("step", "time", "attempt"))
        key = (os.path.commonprefix(names).rpartition("/")[0] if len(names) > 1 else names[0], row["step"])
        if key not in latest or row.get("attempt", 0) >= latest[key].get("attempt", 0):
            latest[key] = row
    if torn:
        warnings.warn(f"{path}: skipped {len(torn)} row(s) cut off mid-write (line {', '.join(map(str, torn[:5]))})",
                      stacklevel=2)
    return sorted(latest.values(), key=lambda r: r["time"])


def _ends_mid_line(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"


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

    def log_config(self, config: Mapping[str, Any]) -> None:
        """The config as the run's hparams (HPARAMS tab) and as YAML text."""
        import yaml
        from torch.utils.tensorboard.summary import hparams

        flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in flatten_config(config).items()}
        # written into this run's own event file; SummaryWriter.add_hparams would start another run folder
        for summary in hparams(flat, {}):
            self._writer.file_writer.add_summary(summary)
        self._writer.add_text("config", "```yaml\n" + yaml.safe_dump(dict(config), sort_keys=False) + "```", 0)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:

        raise ReasonRLError(f"tracker {extra!r} needs the {module} package: pip install {module}") from exc


class WandbTracker:
    """Weights & Biases (optional; mode and key from W&B's own settings: WANDB_MODE, WANDB_API_KEY)."""

    def __init__(self, params: WandbParams) -> None:
        self.params = params
        self._run = None

    def open(self, run_dir: Path) -> None:
        wandb = _require("wandb", "wandb")
        self._run = wandb.init(project=self.params.project, entity=self.params.entity, mode=self.params.mode,
                               dir=str(run_dir), name=Path(run_dir).name)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self._run.log(dict(metrics), step=step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._run.config.update(dict(config), allow_val_change=True)

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


class MlflowTracker:
    """MLflow (optional)."""

    def __init__(self, params: MlflowParams) -> None:
        self.params = params
        self._mlflow = None

    def open(self, run_dir: Path) -> None:
        mlflow = _require("mlflow", "mlflow")
        mlflow.set_tracking_uri(self.params.tracking_uri or (Path(run_dir) / "mlruns").resolve().as_uri())
        mlflow.set_experiment(self.params.experiment)
        mlflow.start_run(run_name=Path(run_dir).name)
        self._mlflow = mlflow

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self._mlflow.log_metrics({k.replace("/", "."): float(v) for k, v in metrics.items()}, step=step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        # MLflow params are write-once strings of at most 6,000 characters
        self._mlflow.log_params({k: str(v)[:6000] for k, v in flatten_config(config).items()})

    def close(self) -> None:
        if self._mlflow is not None:
            self._mlflow.end_run()
            self._mlflow = None
