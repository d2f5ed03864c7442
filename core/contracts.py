"""Typed call contracts, one per component kind.

Stages call components only through these methods, so a stage never branches on a
component's name. Protocols are ``runtime_checkable``: the registry checks a built
component against its kind's contract and names the missing methods.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # the core imports no torch; the annotations name its types as strings
    import torch

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


@dataclass
class Rollouts:
    """What a rollout engine returns: G completions for each of P prompts, flattened
    prompt-major (N = P * G). Tensors are on the device of the model that sampled them."""

    prompt_ids: "list[torch.Tensor]"  # P unpadded prompt token ids (long)
    completion_ids: "torch.Tensor"  # [N, T] long, right-padded
    mask: "torch.Tensor"  # [N, T] 1 on generated tokens (eos included)
    logprobs: "torch.Tensor"  # [N, T] float: log-prob of each sampled token, under the distribution it was drawn from
    truncated: "torch.Tensor"  # [N] bool: hit max_new_tokens without eos or a stop string
    texts: list[str]  # N decoded completions
    group_size: int
    # per sample {position: token ids a decoding constraint allowed there}; set by the rl stage
    # (by replaying the constraint), so the trainer scores the same masked distribution
    allowed: "list[dict[int, list[int]]] | None" = None

    @property
    def groups(self) -> "torch.Tensor":
        import torch

        return torch.arange(len(self.prompt_ids), device=self.completion_ids.device).repeat_interleave(self.group_size)


@dataclass
class RolloutBatch:
    """What a policy optimizer sees. ``num_sequences`` and ``total_tokens`` are totals of the
    whole batch, also inside a micro-batch, so micro-batch losses sum to the batch loss."""

    prompt_ids: "list[torch.Tensor]"
    completion_ids: "torch.Tensor"  # [N, T]
    mask: "torch.Tensor"  # [N, T] 1 on trained tokens
    old_logprobs: "torch.Tensor"  # [N, T] from the rollout
    rewards: "torch.Tensor"  # [N] float
    groups: "torch.Tensor"  # [N] group index of each sample
    truncated: "torch.Tensor"  # [N] bool
    group_size: int
    ref_logprobs: "torch.Tensor | None" = None  # [N, T], when the optimizer needs a reference
    old_values: "torch.Tensor | None" = None  # [N, T], when it needs values
    advantages: "torch.Tensor | None" = None  # [N, T], set by ``PolicyOptimizer.prepare``
    returns: "torch.Tensor | None" = None  # [N, T], value targets (PPO)
    # [N, T] truncated importance weights pi_trainer / pi_engine of the sampled tokens, when the
    # rollout engine samples from a slightly different distribution (vLLM); policy losses multiply
    # their per-token terms by them
    is_weights: "torch.Tensor | None" = None
    # [N] {position: allowed token ids} where a decoding constraint masked the vocabulary; the
    # log-probs there are renormalised over the allowed tokens, as they were sampled
    allowed: "list[dict[int, list[int]]] | None" = None
    num_sequences: int = 0
    total_tokens: int = 0

    def __post_init__(self) -> None:
        self.num_sequences = self.num_sequences or self.completion_ids.shape[0]
        self.total_tokens = self.total_tokens or int(self.mask.sum())

    def prompt_slice(self, start: int, stop: int) -> "RolloutBatch":
        """Prompts [start, stop) with their G completions; totals stay the full batch's."""
        rows = slice(start * self.group_size, stop * self.group_size)
        tensors = ("completion_ids", "mask", "old_logprobs", "rewards", "groups", "truncated", "ref_logprobs",
                   "old_values", "advantages", "returns", "is_weights")
        sliced = {name: None if getattr(self, name) is None else getattr(self, name)[rows]
                  for name in tensors + ("allowed",)}
        return replace(self, prompt_ids=self.prompt_ids[start:stop], **sliced)


@runtime_checkable
class ItemTokenizer(Protocol):
    """Semantic IDs for items. After ``fit``, ``codes`` holds every fitted item's code
    tuple (row i = item i, after collision handling) and ``vocabulary()`` the special
    tokens those codes need in a student's vocabulary."""

    codes: Any  # [items, levels] integer array

    def fit(self, embeddings: Any) -> "ItemTokenizer": ...

    def encode(self, embeddings: Any) -> Any: ...

    def tokens(self, codes: Any) -> list[str]: ...

    def vocabulary(self) -> list[str]: ...

    def report(self) -> dict[str, Any]:
        """At least ``uniqueness`` (share of items whose code no other item has); any other
        JSON-able numbers (raw uniqueness before collision handling, per-level usage) are kept."""
        ...


@runtime_checkable
class TeacherGenerator(Protocol):
    def generate(self, prompts: Sequence[str], n: int = 1) -> list[list[str]]: ...


@runtime_checkable
class Judge(Protocol):
    def probability_yes(self, prompts: Sequence[str]) -> list[float]: ...


class Excluding(tuple):
    """What a constraint's ``allowed()`` returns to forbid a few token ids and allow the rest
    (a plain list of ids allows those only)."""


@runtime_checkable
class DecodingConstraint(Protocol):
    """Builds a per-sample rule: ``allowed()`` -> the token ids the next position may take (None:
    any; an ``Excluding`` tuple of ids: any but those), ``advance(token_id)`` after each sampled
    token. The rollout engine masks the rest."""

    def for_example(self, tokenizer: Any, example: Mapping[str, Any]) -> Any: ...


@runtime_checkable
class RejectionFilter(Protocol):
    def check(self, example: Mapping[str, Any], completion: str) -> Verdict: ...


@runtime_checkable
class PolicyOptimizer(Protocol):
    """Prepares a rollout batch (advantages, and whatever else its loss needs), then gives
    a differentiable loss.

    Attributes read by the trainer: ``needs_reference`` (load a frozen reference
    model and fill ``batch.ref_logprobs``), ``needs_values`` (attach a value head and
    fill ``batch.old_values``) and ``keep_group(rewards)`` (dynamic sampling: whether a
    group enters the batch). ``prepare`` returns a new batch and leaves its input as it was.
    """

    needs_reference: bool
    needs_values: bool

    def keep_group(self, rewards: Sequence[float]) -> bool: ...

    def prepare(self, batch: RolloutBatch) -> RolloutBatch: ...

    def loss(self, batch: RolloutBatch, new_logprobs: "torch.Tensor", ref_logprobs: "torch.Tensor | None" = None,
             values: "torch.Tensor | None" = None) -> "tuple[torch.Tensor, dict[str, float]]": ...


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
    """Samples ``group_size`` completions per prompt from the policy being trained.

    ``temperature`` is the sampling temperature: the trainer scores tokens at the same
    temperature so that old and new log-probs are of one distribution. ``generator``
    seeds the sampling (resumed runs replay it): one ``torch.Generator``, or a list with
    one per prompt, whose samples then draw only from their own prompt's generator.
    ``constraints`` holds one rule per prompt from a ``DecodingConstraint`` (None:
    unconstrained); a rule with ``set_budget(max_new_tokens)`` is told the token budget
    before decoding, by the engine.
    """

    temperature: float

    def generate(self, model: Any, tokenizer: Any, prompts: Sequence[str], group_size: int,
                 generator: Any = None, constraints: Sequence[Any] | None = None) -> Rollouts: ...


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
    """Receives metrics. May also define ``log_config(config: dict)``: the pipeline calls it
    once after ``open`` with the resolved config, to record as the run's hyperparameters."""

    def open(self, run_dir: Path) -> None: ...

    def log(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Command(Protocol):
    def add_arguments(self, parser: Any) -> None: ...

    def run(self, args: Any) -> int: ...


@runtime_checkable
class ServeEndpoint(Protocol):
    """A POST route ``/v1/<name>`` of ``reasonrl serve``. ``served`` is the server's loaded run:
    ``model``, ``tokenizer``, ``run_dir``, ``name``, ``options`` and ``shared(key, factory)``
    (one object per server, e.g. a classifier built on the model). ``run_batch`` runs on the
    server's single generation thread."""

    request_model: type

    def prepare(self, served: Any, request: Any) -> tuple[Any, Any]: ...

    def run_batch(self, served: Any, key: Any, payloads: list[Any]) -> list[dict[str, Any]]: ...
