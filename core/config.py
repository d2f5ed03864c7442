"""Run configs: YAML/JSON files -> validated models, with paths in every error.

A run config names its stages in order. Each stage entry is ``{stage: NAME, id: ...}``
plus that stage's own params inline; a component anywhere inside is ``{name, params}``
(or just the name) and its params are validated by the component's own model.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reasonrl.core.errors import ReasonRLError
from reasonrl.core.registry import Registry, UnknownComponentError


class ConfigError(ReasonRLError):
    """One or more problems in a config; each line names a path, the value and the fix."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        super().__init__(f"{source} is invalid:\n" + "\n".join(f"  - {p}" for p in problems))


class ComponentRef(BaseModel):
    """A reference to a registered component: ``{name: ..., params: {...}}``."""

    model_config = ConfigDict(extra="forbid")
    kind: ClassVar[str] = ""
    name: str
    params: dict[str, Any] = Field(default_factory=dict)

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


class StageEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    stage: str
    id: str | None = None


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    output_dir: str = "runs"
    seed: int = 0
    trackers: list[TrackerRef] = Field(default_factory=lambda: [TrackerRef(name="jsonl")])
    stages: list[StageEntry] = Field(min_length=1)


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
    env: dict[str, str] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.run_name


# ---------------------------------------------------------------- reading files


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"file {path} does not exist; pass the path of a .yaml or .json config"], str(path))
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        raise ConfigError([f"malformed YAML at {where}: {exc.problem}"], str(path)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError([f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"], str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError([f"the top level must be a mapping, got {type(data).__name__}"], str(path))
    return data


_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(
    data: Any, path: str = "", problems: list[str] | None = None, used: dict[str, str] | None = None
) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string value.

    ``used`` collects the variables read, so saved configs can mask their values.
    """
    problems = [] if problems is None else problems
    used = {} if used is None else used
    if isinstance(data, dict):
        return {k: substitute_env(v, _join(path, k), problems, used) for k, v in data.items()}
    if isinstance(data, list):
        return [substitute_env(v, f"{path}[{i}]", problems, used) for i, v in enumerate(data)]
    if not isinstance(data, str):
        return data

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            used[name] = os.environ[name]
            return os.environ[name]
        if default is not None:
            return default
        problems.append(f"{path}: environment variable {name} is not set; export it or write ${{{name}:-default}}")
        return match.group(0)

    result = _ENV_PATTERN.sub(replace, data)
    return yaml.safe_load(result) if result != data and _ENV_PATTERN.fullmatch(data) else result


def _join(path: str, key: Any) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


# ---------------------------------------------------------------- --set overrides

_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_override(text: str) -> tuple[list[str | int], Any]:
    if "=" not in text:
        raise ConfigError([f"--set {text!r}: expected path.to.key=value, e.g. --set stages[0].lr=1e-4"])
    key, _, raw_value = text.partition("=")
    tokens: list[str | int] = []
    for name, index in _TOKEN.findall(key.strip()):
        tokens.append(int(index) if index else (int(name) if name.isdigit() else name))
    if not tokens:
        raise ConfigError([f"--set {text!r}: empty key path"])
    return tokens, yaml.safe_load(raw_value) if raw_value.strip() else ""


def apply_override(data: dict[str, Any], text: str) -> None:
    tokens, value = parse_override(text)
    node: Any = data
    walked = ""
    for token in tokens[:-1]:
        if isinstance(node, dict) and token not in node:
            node[token] = {}  # e.g. params of a component left at its defaults
        try:
            node = node[token]
        except (KeyError, IndexError, TypeError):
            raise ConfigError([f"--set {text!r}: {_join(walked, token)} does not exist in the config"]) from None
        walked = _join(walked, token)
    last = tokens[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or last >= len(node):
            raise ConfigError([f"--set {text!r}: {_join(walked, last)} is not an index of the list at {walked}"])
    elif not isinstance(node, dict):
        raise ConfigError([f"--set {text!r}: {walked} holds {node!r}, not a mapping"])
    node[last] = value


# ---------------------------------------------------------------- validation


def load_config(path: str | Path, overrides: list[str] = (), registry: Registry | None = None) -> ResolvedConfig:
    data = read_config_file(path)
    return resolve_config(data, overrides, registry, source=str(path))


def resolve_config(
    data: dict[str, Any], overrides: list[str] = (), registry: Registry | None = None, source: str = "config"
) -> ResolvedConfig:
    if registry is None:
        from reasonrl.core.manager import get_registry

        registry = get_registry()
    data = copy.deepcopy(data)
    for text in overrides:
        apply_override(data, text)
    problems: list[str] = []
    used_env: dict[str, str] = {}
    data = substitute_env(data, "", problems, used_env)
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
    return ResolvedConfig(run=run, stages=[s for s in stages if s is not None], raw=data, env=used_env)


def _resolve_stage(index: int, entry: StageEntry, registry: Registry, problems: list[str]) -> ResolvedStage | None:
    path = f"stages[{index}]"
    try:
        info = registry.get("stages", entry.stage)
    except UnknownComponentError as exc:
        problems.append(f"{path}.stage: {exc}")
        return None
    try:
        params = info.params.model_validate(entry.model_extra or {})
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, path))
        return None
    for ref_path, ref in _walk_refs(params, path):
        _check_ref(ref, ref_path, registry, problems)
    return ResolvedStage(id=entry.id or entry.stage, name=entry.stage, params=params)


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


def dump_config(config: ResolvedConfig) -> str:
    """The resolved config as YAML, with every stage's params including defaults."""
    data = config.run.model_dump(mode="json", exclude={"stages"})
    data["stages"] = [
        {"stage": s.name, "id": s.id, **s.params.model_dump(mode="json")} for s in config.stages
    ]
    text = yaml.safe_dump(data, sort_keys=False)
    # Values read from the environment may be secrets: write the variable, not the value.
    for name, value in sorted(config.env.items(), key=lambda kv: -len(kv[1])):
        if value:
            text = text.replace(value, f"${{{name}}}")
    return text
