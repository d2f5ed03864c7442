"""Run configs: YAML/JSON files -> validated models, with paths in every error.

A run config names its stages in order. Each stage entry is ``{stage: NAME, id: ...}``
plus that stage's own params inline; a component anywhere inside is ``{name, params}``
(or just the name) and its params are validated by the component's own model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reasonrl.core.config_files import ConfigError, _join, apply_override, read_config_file, substitute_env
from reasonrl.core.manager import get_registry
from reasonrl.core.registry import Registry, UnknownComponentError


class ComponentRef(BaseModel):
    """A reference to a registered component: ``{name: ..., params: {...}}``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    kind: ClassVar[str] = ""
    name: str
    """the registered name of the component (reasonrl plugins lists them)"""
    params: dict[str, Any] = Field(default_factory=dict)
    """the component's own params (reasonrl plugins --params NAME lists them)"""

    @model_validator(mode="before")
    @classmethod
    def _name_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


def _ref(kind: str) -> type[ComponentRef]:
    return type(f"{kind.title().replace('_', '')}Ref", (ComponentRef,), {"kind": kind, "__annotations__": {}})


ItemTokenizerRef = _ref("item_tokenizers")
TeacherRef = _ref("teacher_generators")
RejectionFilterRef = _ref("rejection_filters")
OptimizerRef = _ref("policy_optimizers")
RewardRef = _ref("reward_functions")
CombinerRef = _ref("reward_combiners")
DatasetRef = _ref("datasets")
RolloutEngineRef = _ref("rollout_engines")
MetricRef = _ref("metrics")
TrackerRef = _ref("trackers")
JudgeRef = _ref("judges")
ConstraintRef = _ref("decoding_constraints")


FOLDER_NAME = r"^[A-Za-z0-9_.-]+$"


def _inside_parent(value: str | None) -> str | None:
    """Run names and stage ids become folder names: no separators, and not "." or ".."."""
    if value in (".", ".."):
        raise ValueError(f"{value!r} would leave its parent folder; use letters, digits, '_', '-' or '.'")
    return value


class StageEntry(BaseModel):
    """One entry of ``stages``: the stage's name, its id, and its params beside them."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)
    stage: str
    """The registered stage name (sft, rl, gr2_prepare...)."""
    id: str | None = Field(default=None, pattern=FOLDER_NAME)
    """The stage's folder in the run and the name later stages use for it (default: the stage name)."""
    _folder = field_validator("id")(_inside_parent)


class RunConfig(BaseModel):
    """The top of a run config file."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    run_name: str = Field(pattern=FOLDER_NAME)
    """The run's folder name under output_dir."""
    _folder = field_validator("run_name")(_inside_parent)
    output_dir: str = "runs"
    """The folder that holds runs."""
    seed: int = 0
    """The run's seed; stages derive theirs from it."""
    threads: int | None = Field(None, gt=0)
    """torch threads for this run (unset: torch's default, every core). On a shared CPU, give
    each process that runs at the same time a share, e.g. a local judge server started with
    ``reasonrl serve --threads``: two processes with all cores each slow each other down."""
    trackers: list[TrackerRef] = Field(default_factory=lambda: [TrackerRef(name="jsonl")])
    """Where metrics go: jsonl, tensorboard, wandb, mlflow."""
    stages: list[StageEntry] = Field(min_length=1)
    """The stages, run in order."""


@dataclass
class ResolvedStage:
    id: str
    name: str
    params: BaseModel


@dataclass
class ResolvedConfig:
    run: RunConfig
    stages: list[ResolvedStage]
    raw: dict[str, Any]
    # config path -> the ``${VAR}`` text it held; saved configs write the text back
    templates: dict[tuple[str | int, ...], str] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.run_name


# ---------------------------------------------------------------- reading files


# ---------------------------------------------------------------- --set overrides


# ---------------------------------------------------------------- validation


def load_config(path: str | Path, overrides: list[str] = (), registry: Registry | None = None) -> ResolvedConfig:
    data = read_config_file(path)
    return resolve_config(data, overrides, registry, source=str(path))


def resolve_config(
    data: dict[str, Any], overrides: list[str] = (), registry: Registry | None = None, source: str = "config"
) -> ResolvedConfig:
    if registry is None:

        registry = get_registry()
    data = _unshared_copy(data)
    for text in overrides:
        apply_override(data, text)
    problems: list[str] = []
    templates: dict[tuple, str] = {}
    data = substitute_env(data, (), problems, templates)
    if problems:
        raise ConfigError(problems, source)
    try:
        run = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_pydantic_problems(exc, ""), source) from None
    stages = [_resolve_stage(i, entry, registry, problems) for i, entry in enumerate(run.stages)]
    for i, tracker in enumerate(run.trackers):
        _check_ref(tracker, f"trackers[{i}]", registry, problems)
    _check_unique_ids(stages, problems)
    if problems:
        raise ConfigError(problems, source)
    return ResolvedConfig(run=run, stages=[s for s in stages if s is not None], raw=data, templates=templates)


def _resolve_stage(index: int, entry: StageEntry, registry: Registry, problems: list[str]) -> ResolvedStage | None:
    path = f"stages[{index}]"
    try:
        info = registry.get("stages", entry.stage)
    except UnknownComponentError as exc:
        problems.append(f"{path}.stage: {exc}")
        return None
    try:
        params = info.params_model().model_validate(entry.model_extra or {})
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, path))
        return None
    for ref_path, ref in _walk_refs(params, path):
        _check_ref(ref, ref_path, registry, problems)
    return ResolvedStage(id=entry.id or entry.stage, name=entry.stage, params=params)


def _unshared_copy(data: Any) -> Any:
    """A deep copy in which no two paths share an object. YAML anchors (``&rollout`` /
    ``*rollout``) load as one shared dict; an override must change only the path it names."""
    if isinstance(data, dict):
        return {key: _unshared_copy(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_unshared_copy(value) for value in data]
    return copy.copy(data)


def _check_ref(ref: ComponentRef, path: str, registry: Registry, problems: list[str]) -> None:
    try:
        registry.validate_params(ref.kind, ref.name, ref.params)
    except UnknownComponentError as exc:
        problems.append(f"{path}.name: {exc}")
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, f"{path}.params"))


def _walk_refs(value: Any, path: str) -> Iterator[tuple[str, ComponentRef]]:
    if isinstance(value, ComponentRef):
        yield path, value
    elif isinstance(value, BaseModel):
        for field_name in type(value).model_fields:
            yield from _walk_refs(getattr(value, field_name), _join(path, field_name))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _walk_refs(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_refs(item, _join(path, key))


def _check_unique_ids(stages: list[ResolvedStage | None], problems: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, stage in enumerate(stages):
        if stage is None:
            continue
        if stage.id in seen:
            problems.append(
                f"stages[{i}].id: {stage.id!r} is already used by stages[{seen[stage.id]}]; "
                f"give each stage a distinct id"
            )
        seen[stage.id] = i


def _pydantic_problems(exc: ValidationError, prefix: str) -> list[str]:
    problems = []
    for error in exc.errors():
        path = prefix
        for part in error["loc"]:
            path = _join(path, part)
        got = error.get("input")
        got_text = "" if error["type"] == "missing" else f" (got {got!r})"
        problems.append(f"{path or '(top level)'}: {error['msg']}{got_text}")
    return problems


def config_dict(config: ResolvedConfig) -> dict[str, Any]:
    """The resolved config as plain data, with every stage's params including defaults.

    Values that came from ``${VAR}`` references are written back as the reference, at
    their own path only: they may be secrets, and text replacement would corrupt other values.
    """
    data = config.run.model_dump(mode="json", exclude={"stages"})
    data["stages"] = [
        {"stage": s.name, "id": s.id, **s.params.model_dump(mode="json")} for s in config.stages
    ]
    for path, template in config.templates.items():
        _put(data, path, template)
    return data


def dump_config(config: ResolvedConfig) -> str:
    """:func:`config_dict` as YAML: the ``config.resolved.yaml`` of a run."""
    return yaml.safe_dump(config_dict(config), sort_keys=False)


def flatten_config(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"stages": [{"id": "rl", "lr": 1e-5}]}`` -> ``{"stages.rl.lr": 1e-5}``: flat
    hyperparameters for trackers that take only scalars. Stages are keyed by id."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = [(str(v.get("id", i)) if isinstance(v, dict) else str(i), v) for i, v in enumerate(data)]
    else:
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten_config(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _put(data: Any, path: tuple, value: Any) -> None:
    node = data
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, dict) or (isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node)):
        node[path[-1]] = value
