"""Typed call contracts, one per component kind.

Stages call components only through these methods, so a stage never branches on a
component's name. Protocols are ``runtime_checkable``: the registry checks a built
component against its kind's contract and names the missing methods.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

RewardComponents = dict[str, "float | None"]

_RUN_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("reasonrl_run_dir", default=None)


def current_run_dir() -> Path | None:
    """The folder of the run whose stage is executing (None outside a run).

    Components that read an earlier stage's artifacts (a ``jsonl`` dataset naming
    ``prepare/train.jsonl``) resolve relative paths against it.
    """
    return _RUN_DIR.get()


_ATTEMPT: contextvars.ContextVar[int] = contextvars.ContextVar("reasonrl_attempt", default=1)


def current_attempt() -> int:
    """Which invocation of the run is executing (1, 2, ... as counted in ``attempts.jsonl``).

    Trackers that append to a file stamp rows with it, so a resumed stage's rows can be told
    from the rows of the attempt it resumed.
    """
    return _ATTEMPT.get()


@dataclass(frozen=True)
class Verdict:
    """A rejection filter's decision on one candidate trace."""

    accepted: bool
    reason: str = ""


@runtime_checkable
class ItemTokenizer(Protocol):
    def fit(self, embeddings: Any) -> "ItemTokenizer": ...

    def encode(self, embeddings: Any) -> Any: ...

    def tokens(self, codes: Any) -> list[str]: ...

    def report(self) -> dict[str, Any]: ...


@runtime_checkable
class TeacherGenerator(Protocol):
    def generate(self, prompts: Sequence[str], n: int = 1) -> list[list[str]]: ...


@runtime_checkable
class Judge(Protocol):
    def probability_yes(self, prompts: Sequence[str]) -> list[float]: ...


@runtime_checkable
class DecodingConstraint(Protocol):
    """Builds a per-sample rule: ``allowed()`` -> the token ids the next position may take (None:
    any), ``advance(token_id)`` after each sampled token. The rollout engine masks the rest."""

    def for_example(self, tokenizer: Any, example: Mapping[str, Any]) -> Any: ...


@runtime_checkable
class RejectionFilter(Protocol):
    def check(self, example: Mapping[str, Any], completion: str) -> Verdict: ...


@runtime_checkable
class PolicyOptimizer(Protocol):
    """Advantages from a rollout batch, then a differentiable loss.

    Attributes read by the trainer: ``needs_reference`` (load a frozen reference
    model), ``needs_values`` (attach a value head) and ``keep_group(rewards)``
    (dynamic sampling: whether a group enters the batch).
    """

    needs_reference: bool
    needs_values: bool

    def keep_group(self, rewards: Sequence[float]) -> bool: ...

    def advantages(self, batch: Any) -> Any: ...

    def loss(self, batch: Any, new_logprobs: Any, **extra: Any) -> tuple[Any, dict[str, float]]: ...


@runtime_checkable
class RewardFunction(Protocol):
    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], examples: Sequence[Mapping[str, Any]]
    ) -> list[RewardComponents]: ...


@runtime_checkable
class RewardCombiner(Protocol):
    def combine(self, components: Mapping[str, float | None]) -> float: ...


@runtime_checkable
class Dataset(Protocol):
    def splits(self) -> dict[str, list[dict[str, Any]]]: ...


@runtime_checkable
class RolloutEngine(Protocol):
    def generate(self, model: Any, tokenizer: Any, prompts: Sequence[str], group_size: int) -> Any: ...


@runtime_checkable
class Metric(Protocol):
    def __call__(self, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]: ...


@dataclass
class StageContext:
    """What a stage gets: where to write, what ran before, how to build components."""

    run_dir: Path
    stage_dir: Path
    stage_id: str
    seed: int
    registry: Any
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    trackers: list[Any] = field(default_factory=list)
    # sha256 of the stage's config and inputs: checkpoints store it, a resume checks it
    fingerprint: str = ""

    def build(self, ref: Any) -> Any:
        """Build a component from a ``{name, params}`` reference of the config."""
        return self.registry.build(ref.kind, ref.name, ref.params)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for tracker in self.trackers:
            tracker.log(step, {f"{self.stage_id}/{k}": v for k, v in metrics.items()})

    def stage_output(self, stage_id: str) -> Path:
        """The directory of an earlier stage of this run, checked to exist."""
        path = self.run_dir / stage_id
        if not path.is_dir():
            raise FileNotFoundError(
                f"stage {self.stage_id!r} needs the output of stage {stage_id!r}, but "
                f"{path} does not exist; run that stage first or fix the stage id"
            )
        return path


@runtime_checkable
class Stage(Protocol):
    def run(self, context: StageContext) -> dict[str, Any]: ...


@runtime_checkable
class Tracker(Protocol):
    def open(self, run_dir: Path) -> None: ...

    def log(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Command(Protocol):
    def add_arguments(self, parser: Any) -> None: ...

    def run(self, args: Any) -> int: ...
