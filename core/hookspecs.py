"""Hook specifications: one ``register_<kind>(register)`` hook per component kind.

Every hook has the same shape. reasonrl calls it once per plugin while the plugin
manager loads, passing a ``register`` callable bound to that plugin and kind::

    register(name, factory, params=ParamsModel, summary="one line")

- ``name``: the name configs use (``dapo``, ``rq_kmeans``); unique per kind.
- ``factory``: a callable ``factory(params_model_instance) -> component`` or a
  ``"module.path:attribute"`` string imported only when the component is built, so
  registration never imports heavy libraries.
- ``params``: a pydantic model validating the component's ``params`` from a config
  (defaults to an empty model that forbids unknown keys).
- ``summary``: one line shown by ``reasonrl plugins``.

The hook returns nothing. A name registered twice in one kind is a conflict: both
claims are listed by ``reasonrl plugins``, and building that name raises
:class:`reasonrl.core.registry.DuplicateComponentError` naming both plugins. A hook
that raises withdraws its plugin's components; the other plugins still load.
The built component must satisfy the kind's contract in :mod:`reasonrl.core.contracts`.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import pluggy

PROJECT = "reasonrl"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# kind name -> contract class name in reasonrl.core.contracts (kept in one place so the
# registry, the CLI and the docs test agree on the list).
KINDS = {
    "item_tokenizers": "ItemTokenizer",
    "teacher_generators": "TeacherGenerator",
    "rejection_filters": "RejectionFilter",
    "policy_optimizers": "PolicyOptimizer",
    "reward_functions": "RewardFunction",
    "reward_combiners": "RewardCombiner",
    "datasets": "Dataset",
    "rollout_engines": "RolloutEngine",
    "metrics": "Metric",
    "stages": "Stage",
    "trackers": "Tracker",
    "judges": "Judge",
    "decoding_constraints": "DecodingConstraint",
    "commands": "Command",
    "serve_endpoints": "ServeEndpoint",
}


class Register(Protocol):
    """The callback every ``register_<kind>`` hook receives, bound to its plugin and kind.

    ``factory`` and ``params`` may be ``"module.path:Attribute"`` strings, imported only
    when the component is built or its params are validated."""

    def __call__(self, name: str, factory: Callable[..., Any] | str, params: type | str = ...,
                 summary: str = "") -> None: ...


@hookspec
def register_item_tokenizers(register: Register) -> None:
    """Register item tokenizers (semantic-ID builders such as ``rq_kmeans``).

    Called once at load time. The built component satisfies
    :class:`~reasonrl.core.contracts.ItemTokenizer`: ``fit(embeddings)`` learns codes (then in ``codes``),
    ``encode(embeddings) -> codes``, ``tokens(codes) -> strings``, ``vocabulary()`` (the
    special tokens a student needs) and ``report()`` (uniqueness, per-level usage).
    """


@hookspec
def register_teacher_generators(register: Register) -> None:
    """Register teacher generators (local HF model, OpenAI-compatible endpoint, vLLM).

    Called once at load time. The built component satisfies
    :class:`~reasonrl.core.contracts.TeacherGenerator`:
    ``generate(prompts, n) -> list[list[str]]`` with ``n`` completions per prompt.
    """


@hookspec
def register_rejection_filters(register: Register) -> None:
    """Register rejection filters that keep or drop teacher traces.

    Called once at load time. The built component satisfies
    :class:`~reasonrl.core.contracts.RejectionFilter`:
    ``check(example, completion) -> Verdict(accepted, reason)``.
    """


@hookspec
def register_policy_optimizers(register: Register) -> None:
    """Register policy optimizers (``grpo``, ``dr_grpo``, ``dapo``, ``ppo``...).

    Called once at load time. The built component satisfies
    :class:`~reasonrl.core.contracts.PolicyOptimizer`: ``prepare(batch)`` returns a
    new :class:`~reasonrl.core.contracts.RolloutBatch` with advantages (the input is left
    as it was), then ``loss(batch, new_logprobs)``; the trainer never branches on the
    optimizer's name.
    """


@hookspec
def register_reward_functions(register: Register) -> None:
    """Register reward functions.

    Called once at load time. The built component satisfies
    :class:`~reasonrl.core.contracts.RewardFunction`:
    ``__call__(prompts, completions, examples) -> list[dict[str, float | None]]``, one
    dict of named components per sample; ``None`` means "not applicable".
    """


@hookspec
def register_reward_combiners(register: Register) -> None:
    """Register reward combiners that turn named components into one scalar.

    Called once at load time. The built component satisfies
    :class:`~reasonrl.core.contracts.RewardCombiner`:
    ``combine(components) -> float`` for one sample's merged component dict.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets.

    Called once at load time. The built component satisfies
    :class:`~reasonrl.core.contracts.Dataset`: ``splits() -> dict[str, list[dict]]``
    with at least ``train``; each example carries its ground truth.
    """


@hookspec
def register_rollout_engines(register: Register) -> None:
    """Register rollout engines (``hf``, ``vllm``).

    Called once at load time. The built component satisfies
    :class:`~reasonrl.core.contracts.RolloutEngine`:
    ``generate(model, tokenizer, prompts, group_size, generator=None, constraints=None)
    -> Rollouts`` with token ids and per-token logprobs of the sampled tokens, and a
    ``temperature`` attribute the trainer scores at.
    """


@hookspec
def register_metrics(register: Register) -> None:
    """Register evaluation metrics.

    Called once at load time. The built component satisfies
    :class:`~reasonrl.core.contracts.Metric`:
    ``__call__(predictions, references) -> dict[str, float]``.
    """


@hookspec
def register_stages(register: Register) -> None:
    """Register pipeline stages (``lm``, ``sft``, ``rl``, ``evaluate``...).

    Called once at load time. The built component satisfies
    :class:`~reasonrl.core.contracts.Stage`: ``run(context) -> dict`` writes its
    artifacts under ``context.stage_dir`` and returns a JSON-able summary.
    """


@hookspec
def register_trackers(register: Register) -> None:
    """Register metric trackers (``jsonl``, ``tensorboard``...).

    Called once at load time. The built component satisfies
    :class:`~reasonrl.core.contracts.Tracker`: ``open(run_dir)``,
    ``log(step, metrics)``, ``close()``.
    """


@hookspec
def register_judges(register: Register) -> None:
    """Register LLM judges that score texts against a yes/no rubric question.

    Called once at load time. The built component satisfies
    :class:`~reasonrl.core.contracts.Judge`: ``probability_yes(prompts) -> [p]``, the
    judge's probability of answering "yes" to each fully written judge prompt.
    """


@hookspec
def register_decoding_constraints(register: Register) -> None:
    """Register decoding constraints (``sid_trie``: only real items' semantic IDs).

    Called once at load time. The built component satisfies
    :class:`~reasonrl.core.contracts.DecodingConstraint`: ``for_example(tokenizer, example)``
    returns a fresh rule with ``allowed() -> token ids or None`` and ``advance(token_id)``.
    """


@hookspec
def register_commands(register: Register) -> None:
    """Register extra ``reasonrl`` subcommands (``reasonrl rerank``...).

    Called once at load time. The built component satisfies
    :class:`~reasonrl.core.contracts.Command`: ``add_arguments(parser)`` declares its
    arguments, ``run(args) -> int`` executes it and returns the exit code.
    """


@hookspec
def register_serve_endpoints(register: Register) -> None:
    """Register extra POST routes of ``reasonrl serve`` (``/v1/<name>``: ``classify``, ``rerank``...).

    Called once at load time. The built component satisfies
    :class:`~reasonrl.core.contracts.ServeEndpoint`: ``request_model`` validates the JSON
    body, ``prepare(served, request) -> (batch key, payload)`` checks one request (a
    ``ReasonRLError`` becomes HTTP 400), and ``run_batch(served, key, payloads)`` answers
    the payloads that share a key in one call, one JSON-able dict each, in order.
    """


@hookspec
def run_starting(config: Any, echo: Callable[[str], None]) -> None:
    """Called once in the main process before a run's stages (``config``: the ResolvedConfig).

    A plugin applies run-wide settings of its own concern and warns about the setup: the
    built-in engine pack sets torch's thread count from the config's ``threads:`` and warns
    when a judge or teacher is served on the same CPU cores. Not a component kind."""


@hookspec
def run_facts() -> dict[str, Any]:
    """What a plugin adds to a run's ``versions.json`` (the engine pack: torch's thread counts,
    which results depend on). Every implementation's mapping is merged; not a component kind."""
