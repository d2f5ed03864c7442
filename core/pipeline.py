"""The pipeline runner: stages in order under ``runs/<run_name>/<stage_id>/``.

A stage is finished when its marker file exists; the marker is written atomically
after the stage returns, so a crash mid-stage leaves no marker and the next run
repeats (or resumes) that stage while skipping the finished ones.

Every stage has a fingerprint: its resolved config, the run seed and the output ids of
the earlier stages it names (its inputs). A finished stage is skipped only when its
marker holds the same fingerprint; otherwise the run stops and says how to go on, so
an edited config never skips or resumes silently. One difference is not an edit: options a
newer reasonrl added, left at their defaults (the marker records which option names the stage
ran with), so upgrading does not make finished runs stale. ``--force STAGE`` reruns that stage
from scratch, and every later stage that takes it as an input, directly or not.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from reasonrl.core.config import ResolvedConfig, ResolvedStage, config_dict, dump_config
from reasonrl.core.contracts import StageContext, _ATTEMPT, _RUN_DIR
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.io import atomic_write_json, atomic_write_text, read_json
from reasonrl.core.manager import get_plugin_manager, get_registry
from reasonrl.core.registry import Registry
from reasonrl.core.runlock import RunLock

MARKER = "stage_done.json"
ATTEMPTS = "attempts.jsonl"


class StaleStageError(ReasonRLError):
    """A finished stage's marker was made by another config than the one given now."""


def shutdown_distributed() -> None:
    """Tear down the process group a multi-process launch started, once the work is done.

    A gloo or NCCL group left for interpreter exit can abort a rank ("terminate called
    without an active exception") after its work finished, failing the launch."""
    import sys

    if "torch" not in sys.modules:  # nothing distributed ran in this process
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run_pipeline(
    config: ResolvedConfig,
    force: Iterable[str] = (),
    registry: Registry | None = None,
    echo=print,
) -> dict[str, dict[str, Any]]:
    """Run every unfinished stage; returns each stage's summary keyed by stage id."""
    if registry is None:

        registry = get_registry()
    # other ranks of a multi-process launch share the main process's hold on the folder
    if not is_main_process():
        return _run_locked(config, plan_stages(config, force), registry, echo)
    check_writable(config.run_dir)
    shared = shares_folder(plan_stages(config, force), config, registry)
    with RunLock(config.run_dir, shared=shared):
        plan = plan_stages(config, force)  # again, under the lock: another run may have finished stages
        if shared and not shares_folder(plan, config, registry):
            raise ReasonRLError(f"run folder {config.run_dir} changed while this run started; run it again")
        return _run_locked(config, plan, registry, echo)


def shares_folder(plan: dict[str, str], config: ResolvedConfig, registry: Registry) -> bool:
    """True when every stage left to run is built for several workers in one folder
    (``shares_run_folder``) and none starts over: such runs may go side by side."""
    names = {stage.id: stage.name for stage in config.stages}
    left = [stage_id for stage_id, action in plan.items() if action != "skip"]
    return bool(left) and all(plan[s] == "run" and getattr(registry.get("stages", names[s]).resolve_factory(),
                                                           "shares_run_folder", False) for s in left)


def _run_locked(config: ResolvedConfig, plan: dict[str, str], registry: Registry, echo) -> dict[str, dict[str, Any]]:
    run_dir = config.run_dir
    get_plugin_manager().hook.run_starting(config=config, echo=echo)  # run-wide settings of the plugins
    attempt = _start_attempt(config, plan) if is_main_process() else 0
    # under a multi-process launch only the main process writes files and reports metrics
    trackers = [registry.build("trackers", ref.name, ref.params) for ref in config.run.trackers] \
        if is_main_process() else []
    tokens = [_RUN_DIR.set(run_dir), _ATTEMPT.set(attempt)]
    hyperparameters = config_dict(config)
    for tracker in trackers:
        tracker.open(run_dir)
        if hasattr(tracker, "log_config"):  # optional in the contract: older trackers lack it
            tracker.log_config(hyperparameters)
    outputs: dict[str, dict[str, Any]] = {}
    try:
        for index, stage in enumerate(config.stages):
            runner = StageRunner(config, registry, trackers, echo, attempt)
            outputs[stage.id] = runner.run(index, stage, plan[stage.id], outputs)
    finally:
        _ATTEMPT.reset(tokens[1])
        _RUN_DIR.reset(tokens[0])
        for tracker in trackers:
            tracker.close()
    return outputs


# ---------------------------------------------------------------- planning


def stage_inputs(config: ResolvedConfig) -> dict[str, list[str]]:
    """The earlier stages each stage names in its params: by id, or by a path under an id."""
    inputs: dict[str, list[str]] = {}
    earlier: list[str] = []
    for stage in config.stages:
        values = set(_strings(stage.params.model_dump(mode="json")))
        inputs[stage.id] = [s for s in earlier if s in values or any(v.startswith(f"{s}/") for v in values)]
        earlier.append(stage.id)
    return inputs


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def plan_stages(config: ResolvedConfig, force: Iterable[str] = ()) -> dict[str, str]:
    """stage id -> "skip", "run" (fresh, or resume from a checkpoint) or "fresh" (start over: forced, or an input reruns).

    Raises StaleStageError, before any work, when a finished stage was made by another
    config; the message lists every such stage and the two ways on.
    """
    force = set(force)
    ids = [stage.id for stage in config.stages]
    unknown = force - set(ids)
    if unknown:
        raise ReasonRLError(f"--force {sorted(unknown)}: no such stage id; this config's stages are {ids}")
    inputs = stage_inputs(config)
    plan: dict[str, str] = {}
    edited: list[str] = []
    for stage in config.stages:
        marker = _read_marker(config.run_dir / stage.id)
        ins = [plan[s] for s in inputs[stage.id]]
        if stage.id in force or "fresh" in ins or "run" in ins:
            plan[stage.id] = "fresh"
        elif marker is None:
            plan[stage.id] = "run"
        elif marker.get("fingerprint") != stage_fingerprint(config, stage, inputs[stage.id]) \
                and not adopt_newer_defaults(config, stage, inputs[stage.id], marker):
            plan[stage.id] = "stale"
            edited.append(stage.id)
        else:
            plan[stage.id] = "stale" if "stale" in ins else "skip"
    stale = [s for s, action in plan.items() if action == "stale"]
    if stale:
        raise StaleStageError(_stale_message(config, stale, edited))
    return plan


def _stale_message(config: ResolvedConfig, stale: list[str], edited: list[str]) -> str:
    forces = " ".join(f"--force {s}" for s in edited)
    return (f"stage(s) {stale} of run {config.run_dir} finished earlier with another config (or other inputs) "
            f"than the one given now; nothing was skipped or rerun. To rerun them here, add {forces} (the stages "
            f"that use a forced stage rerun with it); to keep that run, give this config a new run_name "
            f"(e.g. --set run_name={config.run.run_name}_2).")


def stage_fingerprint(config: ResolvedConfig, stage: ResolvedStage, inputs: list[str],
                      params: dict[str, Any] | None = None) -> str:
    """sha256 of what decides a stage's outputs: its name and params, the seed, its inputs' output ids."""
    input_ids = {s: (_read_marker(config.run_dir / s) or {}).get("output_id") for s in inputs}
    payload = {"stage": stage.name, "params": stage.params.model_dump(mode="json") if params is None else params,
               "seed": config.run.seed, "inputs": input_ids}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def param_keys(params: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of every key in a params dump (lists are values, not descended into)."""
    keys = set()
    for key, value in params.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= param_keys(value, f"{prefix}{key}.")
    return keys


def adopt_newer_defaults(config: ResolvedConfig, stage: ResolvedStage, inputs: list[str], marker: dict) -> bool:
    """True, and the marker takes today's fingerprint, when a finished stage differs from today's
    config only by params that a newer reasonrl added, at their defaults: without this, every new
    option would make every finished run stale. The keys the stage ran with come from its marker
    (``param_keys``), or for older markers from the run's config.resolved.yaml; the old fingerprint
    must equal today's params without the added keys, so nothing else changed."""
    recorded = marker.get("param_keys")
    if recorded is None:
        saved = config.run_dir / "config.resolved.yaml"
        entries = (yaml_stages(saved) if saved.exists() else {}).get(stage.id)
        if entries is None:
            return False
        recorded = param_keys({k: v for k, v in entries.items() if k not in ("stage", "id")})
    current = stage.params.model_dump(mode="json")
    added = param_keys(current) - set(recorded)
    explicit = param_keys(stage.params.model_dump(mode="json", exclude_defaults=True))
    if not added or added & explicit:
        return False
    if marker.get("fingerprint") != stage_fingerprint(config, stage, inputs, _without(current, added)):
        return False
    if is_main_process():
        atomic_write_json(config.run_dir / stage.id / MARKER, {
            **marker, "fingerprint": stage_fingerprint(config, stage, inputs), "param_keys": sorted(param_keys(current)),
            "adopted_defaults": sorted(added)})
    return True


def yaml_stages(path: Path) -> dict[str, dict[str, Any]]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {entry.get("id"): entry for entry in data.get("stages", []) if isinstance(entry, dict)}


def _without(params: dict[str, Any], paths: set[str], prefix: str = "") -> dict[str, Any]:
    return {k: _without(v, paths, f"{prefix}{k}.") if isinstance(v, dict) else v
            for k, v in params.items() if prefix + k not in paths}


def _read_marker(stage_dir: Path) -> dict[str, Any] | None:
    marker = stage_dir / MARKER
    return read_json(marker) if marker.exists() else None


def check_writable(folder: Path) -> None:
    """Fail before any work when ``folder`` cannot take new files (not after hours of training)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ReasonRLError(f"output folder {folder} is not writable ({exc.strerror or exc}); fix its permissions "
                            f"or set output_dir to a writable folder. Nothing was run.") from None


def is_main_process() -> bool:
    """False on the other ranks of a multi-process launch (``accelerate launch`` sets RANK)."""
    return os.environ.get("RANK", "0") == "0"


def _start_attempt(config: ResolvedConfig, plan: dict[str, str]) -> int:
    """Check the folders, number this invocation and save what it runs with."""
    run_dir = config.run_dir
    for folder in [run_dir] + [run_dir / s for s, action in plan.items() if action != "skip"]:
        if folder.exists() or folder == run_dir:
            check_writable(folder)
    attempt = _record_attempt(run_dir, plan)
    atomic_write_text(run_dir / "config.resolved.yaml", dump_config(config))
    atomic_write_json(run_dir / "versions.json", environment_versions())
    return attempt


def _record_attempt(run_dir: Path, plan: dict[str, str]) -> int:
    """Number this invocation; metric rows carry it, so a resumed stage's rows can be told apart."""
    log = run_dir / ATTEMPTS
    attempt = 1 + (len(log.read_text().splitlines()) if log.exists() else 0)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"attempt": attempt, "time": time.time(), "plan": plan}) + "\n")
    return attempt


# ---------------------------------------------------------------- running


class StageRunner:
    def __init__(self, config: ResolvedConfig, registry: Registry, trackers, echo, attempt: int) -> None:
        self.config, self.registry, self.trackers, self.echo, self.attempt = config, registry, trackers, echo, attempt

    def run(self, index: int, stage: ResolvedStage, action: str, outputs) -> dict[str, Any]:
        stage_dir = self.config.run_dir / stage.id
        where = f"[{index + 1}/{len(self.config.stages)}] {stage.id}"
        if action == "skip":
            self.echo(f"{where}: finished earlier with this config, skipped ({stage_dir / MARKER})")
            return read_json(stage_dir / MARKER)["summary"]
        if is_main_process():
            if action == "fresh" and stage_dir.exists():
                self.echo(f"{where}: starting over (forced, or an input stage was rerun); removing {stage_dir}")
                shutil.rmtree(stage_dir)
            (stage_dir / MARKER).unlink(missing_ok=True)
            check_writable(stage_dir)
            self.echo(f"{where} ({stage.name}) -> {stage_dir}")
        fingerprint = stage_fingerprint(self.config, stage, stage_inputs(self.config)[stage.id])
        context = StageContext(run_dir=self.config.run_dir, stage_dir=stage_dir, stage_id=stage.id,
                               seed=self.config.run.seed, registry=self.registry, outputs=outputs,
                               trackers=self.trackers, fingerprint=fingerprint)
        return run_stage(context, stage.name, stage.params, self.echo)


def run_stage(context: StageContext, name: str, params: Any, echo=print) -> dict[str, Any]:
    """Build the registered stage ``name`` with ``params``, run it in ``context.stage_dir``, then
    mark it done (atomically) with the context's fingerprint and a fresh output id.

    Stages that run stages of their own (a study's rungs) call this too, so every marker
    has the same fields."""
    component = context.registry.build("stages", name, params)
    if not is_main_process() and not getattr(component, "distributed", False):
        return {}  # stages that do not train data-parallel run on the main process only
    started = time.perf_counter()
    summary = component.run(context) or {}
    seconds = time.perf_counter() - started
    if not is_main_process():
        return summary
    atomic_write_json(context.stage_dir / MARKER, {
        "stage": name, "id": context.stage_id, "seconds": seconds, "summary": summary,
        "fingerprint": context.fingerprint, "output_id": uuid.uuid4().hex, "attempt": _ATTEMPT.get(),
        # which params existed (names only, no values: they may hold secrets), so a newer version's
        # added params at their defaults do not make this stage stale (adopt_newer_defaults)
        "param_keys": sorted(param_keys(params.model_dump(mode="json"))) if hasattr(params, "model_dump") else None,
    })
    echo(f"    done in {seconds:.1f}s")
    return summary


def environment_versions() -> dict[str, Any]:
    packages = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[name] = dist.version
    facts: dict[str, Any] = {}
    for found in get_plugin_manager().hook.run_facts():
        facts.update(found or {})
    return {"python": sys.version, "platform": platform.platform(), **facts, "packages": dict(sorted(packages.items()))}
