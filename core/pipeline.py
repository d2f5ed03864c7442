"""The pipeline runner: stages in order under ``runs/<run_name>/<stage_id>/``.

A stage is finished when its marker file exists; the marker is written atomically
after the stage returns, so a crash mid-stage leaves no marker and the next run
repeats (or resumes) that stage while skipping the finished ones.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from reasonrl.core.config import ResolvedConfig, dump_config
from reasonrl.core.contracts import _RUN_DIR, StageContext
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.io import atomic_write_json, atomic_write_text, read_json
from reasonrl.core.registry import Registry

MARKER = "stage_done.json"


def run_pipeline(
    config: ResolvedConfig,
    force: Iterable[str] = (),
    registry: Registry | None = None,
    echo=print,
) -> dict[str, dict[str, Any]]:
    """Run every unfinished stage; returns each stage's summary keyed by stage id."""
    if registry is None:
        from reasonrl.core.manager import get_registry

        registry = get_registry()
    force = set(force)
    ids = [stage.id for stage in config.stages]
    unknown = force - set(ids)
    if unknown:
        raise ReasonRLError(f"--force {sorted(unknown)}: no such stage id; this config's stages are {ids}")
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.resolved.yaml", dump_config(config))
    atomic_write_json(run_dir / "versions.json", environment_versions())
    trackers = [registry.build("trackers", ref.name, ref.params) for ref in config.run.trackers]
    for tracker in trackers:
        tracker.open(run_dir)
    outputs: dict[str, dict[str, Any]] = {}
    token = _RUN_DIR.set(run_dir)
    try:
        for index, stage in enumerate(config.stages):
            outputs[stage.id] = _run_stage(config, index, stage, force, registry, trackers, outputs, echo)
    finally:
        _RUN_DIR.reset(token)
        for tracker in trackers:
            tracker.close()
    return outputs


def _run_stage(config, index, stage, force, registry, trackers, outputs, echo) -> dict[str, Any]:
    stage_dir = config.run_dir / stage.id
    marker = stage_dir / MARKER
    if marker.exists() and stage.id not in force:
        echo(f"[{index + 1}/{len(config.stages)}] {stage.id}: finished earlier, skipped ({marker})")
        return read_json(marker)["summary"]
    marker.unlink(missing_ok=True)
    stage_dir.mkdir(parents=True, exist_ok=True)
    echo(f"[{index + 1}/{len(config.stages)}] {stage.id} ({stage.name}) -> {stage_dir}")
    component = registry.build("stages", stage.name, stage.params)
    context = StageContext(
        run_dir=config.run_dir,
        stage_dir=stage_dir,
        stage_id=stage.id,
        seed=config.run.seed,
        registry=registry,
        outputs=outputs,
        trackers=trackers,
    )
    started = time.perf_counter()
    summary = component.run(context) or {}
    seconds = time.perf_counter() - started
    atomic_write_json(marker, {"stage": stage.name, "id": stage.id, "seconds": seconds, "summary": summary})
    echo(f"    done in {seconds:.1f}s")
    return summary


def environment_versions() -> dict[str, Any]:
    packages = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[name] = dist.version
    return {"python": sys.version, "platform": platform.platform(), "packages": dict(sorted(packages.items()))}
