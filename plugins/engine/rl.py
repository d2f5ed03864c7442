"""The ``rl`` stage: dataset -> rollouts -> rewards -> combiner -> filter -> optimizer -> step."""

from __future__ import annotations

import random
import statistics
import time
from collections import deque
from dataclasses import replace
from typing import Any, Literal

import torch
from pydantic import Field

from reasonrl.core.config import CombinerRef, ConstraintRef, OptimizerRef, RewardRef, RolloutEngineRef
from reasonrl.core.contracts import RolloutBatch, StageContext
from reasonrl.core.errors import ReasonRLError, StopTraining
from reasonrl.core.io import atomic_write_json
from reasonrl.plugins.engine.models import chat_prompt
from reasonrl.plugins.rewards import INVALID, score_samples
from reasonrl.plugins.engine.rollout import check_rollouts, completion_logprobs, engine_logprob_gap, replay_allowed
from reasonrl.plugins.engine.training import Trainer, TrainingParams, seed_all, step_seed


class RLParams(TrainingParams):
    prompt_field: str = "prompt"
    """the example field holding the prompt"""
    chat_template: bool = False
    """wrap prompts in the tokenizer's chat template"""
    optimizer: OptimizerRef = Field(default_factory=lambda: OptimizerRef(name="dapo"))
    """the policy optimizer (dapo, grpo, dr_grpo, ppo...)"""
    rollout: RolloutEngineRef = Field(default_factory=lambda: RolloutEngineRef(name="hf"))
    """the rollout engine that samples completions (hf or vllm)"""
    rewards: list[RewardRef] = Field(min_length=1)
    """reward functions; their components are merged, then combined"""
    combiner: CombinerRef = Field(default_factory=lambda: CombinerRef(name="weighted_sum"))
    """turns the named reward components into one scalar"""
    metrics: list[RewardRef] = Field(default_factory=list, description=(
        "reward functions computed on every rollout and logged as metric/<component>, never combined into the "
        "reward (e.g. gr2's ranking_behaviour: identity-copy rate and kept-first share)"))
    constraint: ConstraintRef | None = Field(None, description=(
        "a decoding constraint for rollouts (e.g. sid_trie); sampled and trained log-probs are both "
        "renormalised over the tokens it allows"))
    on_reward_error: Literal["raise", "invalid"] = "raise"
    """raise: a failing reward function stops the run; invalid: the sample gets invalid_reward"""
    invalid_reward: float = -1.0
    """reward of a sample whose reward function failed (on_reward_error: invalid)"""
    steps: int = Field(50, gt=0)
    """RL steps (one rollout batch each)"""
    prompts_per_step: int = Field(8, gt=0)
    """prompts per RL step, across all processes"""
    group_size: int = Field(8, gt=0)
    """completions sampled per prompt (the group advantages compare)"""
    snapshots: list[int] = Field(default_factory=list, description=(
        "steps after which the policy is also saved to snapshots/step<k>/model: a steps ladder scores one run's "
        "prefixes instead of training each rung from the start"))
    max_sampling_rounds: int = Field(3, ge=1, description="generation rounds allowed to fill a batch under dynamic sampling")
    updates_per_batch: int = Field(1, gt=0)
    """optimizer updates per rollout batch (more than 1 goes off-policy, ratio clipped)"""
    micro_batch_prompts: int = Field(4, gt=0)
    """prompts per forward/backward pass (memory, not the result)"""
    prompt_draws: Literal["uniform", "stratified"] = Field("uniform", description=(
        "uniform: each prompt drawn from the whole split; stratified: every step draws the classes of stratify_by "
        "equally often (a majority class cannot dominate the batches, e.g. moderation labels)"))
    stratify_by: str = Field("label", description="the example field whose values stratified draws balance")
    balance_advantages: bool = Field(False, description=(
        "after the optimizer's advantages, divide each stratify_by class's by their own spread over the batch, so "
        "every class pulls with the same strength (per-class advantage normalisation; group-wise std scaling alone "
        "lets the class whose groups disagree more dominate)"))
    sampling_seeds: Literal["batch", "prompt"] = Field("batch", description=(
        "batch: one random stream per rollout batch (fastest); prompt: one per prompt, so results do not "
        "depend on batching or on the number of processes"))


class ValueHead(torch.nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float())


DEEPSPEED_IN_RL = (
    "stage {stage!r}: DeepSpeed runs sft and lm, not rl. An rl step makes a varying number of backward passes "
    "(dynamic sampling keeps a varying number of groups), while a DeepSpeed engine fixes its accumulation steps "
    "in its config and steps the optimizer itself at that count; and under ZeRO-3 every decoded token would "
    "gather every layer. Shard rl with fsdp: {{}} instead (accelerate launch --num_processes N), or remove "
    "deepspeed here (and from accelerate's config for this stage).")


def mean_components(rows: list[dict[str, float | None]], prefix: str) -> dict[str, float]:
    """Mean of each component over the samples where it applies (not None)."""
    names = sorted({name for row in rows for name in row})
    means = {}
    for name in names:
        values = [row[name] for row in rows if row.get(name) is not None]
        if values:
            means[prefix + name] = statistics.fmean(values)
    return means


def balance_by_class(advantages: torch.Tensor, mask: torch.Tensor, group_classes: list, group_size: int,
                     eps: float = 1e-6) -> torch.Tensor:
    """Each class's advantages divided by their std over the class's generated tokens: every
    class then pulls with the same strength, however much its groups' rewards spread."""
    out = advantages.clone()
    sample_classes = [c for c in group_classes for _ in range(group_size)]
    keep = mask.bool()
    for value in set(map(str, sample_classes)):
        rows = torch.tensor([str(c) == value for c in sample_classes], device=advantages.device)
        tokens = advantages[rows][keep[rows]]
        if tokens.numel() > 1 and float(tokens.std()) > eps:
            out[rows] = advantages[rows] / tokens.std()
    return out


def strata_of(examples: list[dict], field: str, stage: str) -> dict[Any, list[int]]:
    """Example indices per value of ``field``."""
    strata: dict[Any, list[int]] = {}
    for index, example in enumerate(examples):
        if field not in example:
            raise ReasonRLError(f"stage {stage!r}: prompt_draws: stratified balances {field!r}, and training example "
                                f"{index} has no such field (it has {sorted(example)}); set stratify_by")
        strata.setdefault(example[field], []).append(index)
    return strata


def draw_examples(examples: list[dict], strata: dict[Any, list[int]] | None, rng: random.Random, n: int) -> list[dict]:
    """``n`` examples drawn uniformly, or with every stratum drawn n // K times (the remainder
    from distinct strata chosen at random) and a uniform example inside each."""
    if strata is None:
        return [examples[rng.randrange(len(examples))] for _ in range(n)]
    keys = sorted(strata, key=str)
    order = keys * (n // len(keys)) + rng.sample(keys, n % len(keys))
    return [examples[rng.choice(strata[key])] for key in order]


class RLStage(Trainer):
    """On-policy RL with any registered optimizer, rollout engine and rewards."""

    def run(self, context: StageContext) -> dict[str, Any]:
        params = self.params
        self.context = context
        if params.deepspeed is not None:
            raise ReasonRLError(DEEPSPEED_IN_RL.format(stage=context.stage_id))
        self.optimizer_algo = context.build(params.optimizer)
        self.engine = context.build(params.rollout)
        self.constraint = context.build(self.params.constraint) if self.params.constraint else None
        self.reward_fns = [(ref.name, context.build(ref)) for ref in params.rewards]
        self.metric_fns = [(ref.name, context.build(ref)) for ref in params.metrics]
        self.combiner = context.build(params.combiner)
        self.train = self.examples(params.split, (params.prompt_field,))
        self.strata = strata_of(self.train, params.stratify_by, context.stage_id) \
            if params.prompt_draws == "stratified" else None
        make_extra = (lambda model: {"value_head": ValueHead(model.config.hidden_size)}) \
            if self.optimizer_algo.needs_values else None
        self.setup(context, params.steps, make_extra)
        if self.uses_deepspeed:  # switched on by accelerate's config rather than the stage
            raise ReasonRLError(DEEPSPEED_IN_RL.format(stage=context.stage_id))
        if self.sharded and getattr(self.engine, "needs_whole_weights", False):
            raise ReasonRLError(f"stage {context.stage_id!r}: rollout engine {params.rollout.name!r} takes the whole "
                                f"policy every step, and FSDP keeps it sharded; use DDP with this engine, or "
                                f"rollout: hf under FSDP")
        if params.prompts_per_step % self.world:
            raise ReasonRLError(f"stage {context.stage_id!r}: prompts_per_step={params.prompts_per_step} does not split "
                                f"over {self.world} processes; use a multiple of {self.world}")
        self.reference = self._reference_model() if self.optimizer_algo.needs_reference else None
        history = self._history()
        bar = self.progress(f"rl[{params.optimizer.name}]")
        window = max((getattr(fn, "guard_window", 0) for _, fn in self.metric_fns), default=0)
        policies: deque = deque(maxlen=window + 1)  # start-of-step policies a guard may fall back on
        stopped: dict[str, Any] = {}
        for step in range(self.start_step, params.steps):
            if window:
                policies.append((step, self._trainable_state()))
            try:
                metrics = self.train_step(step)
            except StopTraining as stop:
                stopped = self._fall_back(stop, step, policies)
                break
            history.append(metrics)
            context.log(step + 1, metrics)
            bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", loss=f"{metrics['loss']:.4f}")
            bar.update(1)
            if step + 1 in params.snapshots:
                self.save_snapshot(step + 1)
            self.maybe_checkpoint(step + 1, {"history": history})
        bar.close()
        self.save_model({"history": history, **stopped})
        return {**self._summary(history), **stopped}

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        model = self.accelerator.unwrap_model(self.model)
        return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}

    def _fall_back(self, stop: StopTraining, step: int, policies: deque) -> dict[str, Any]:
        """A check stopped the stage: keep the policy of ``stop.restore_steps_back`` steps
        before (the oldest held, if fewer are) and say so."""
        back = min(stop.restore_steps_back, len(policies) - 1) if policies else 0
        kept_step = step
        if back:
            kept_step, state = policies[-1 - back]
            model = self.accelerator.unwrap_model(self.model)
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in state:
                        p.copy_(state[name].to(p.device))
        print(f"    {self.context.stage_id}: stopped at step {step + 1}: {stop.reason}; keeping the policy of step "
              f"{kept_step} (the last the check accepted)")
        return {"stopped_at_step": step + 1, "stop_reason": stop.reason, "kept_policy_of_step": kept_step}

    def decode_settings(self):
        settings = super().decode_settings()
        answer = getattr(getattr(self.engine, "params", None), "max_new_tokens", settings.max_new_tokens)
        return settings.model_copy(update={"constraint": self.params.constraint, "max_new_tokens": answer})

    def _history(self) -> list[dict[str, float]]:
        return list(getattr(self, "resumed_state", {}).get("history", []))

    def _reference_model(self):
        from reasonrl.plugins.engine.models import load_policy

        reference, _ = load_policy(self.params.model.model_copy(update={"lora": None}), self.context.run_dir, self.seed)
        return reference.to(self.accelerator.device).eval().requires_grad_(False)

    # ------------------------------------------------------------ one step
    def train_step(self, step: int) -> dict[str, float]:
        started = time.perf_counter()
        seed_all(step_seed(self.seed, step))
        batch, info = self.collect(step)
        info["time/rollout"] = time.perf_counter() - started
        self.model.train()
        if batch is None:  # every group was filtered out (on some rank): nothing to learn from this step
            return {**info, "loss": 0.0, "step_seconds": time.perf_counter() - started}
        info.update(self._score_old(batch))
        if not getattr(self, "_engine_checked", False):
            self._check_engine_logprobs(batch)
        batch = self.optimizer_algo.prepare(batch)
        if self.params.balance_advantages:
            batch = replace(batch, advantages=balance_by_class(batch.advantages, batch.mask,
                                                               self.batch_classes, batch.group_size))
        batch = self._with_global_totals(batch)
        stats: dict[str, float] = {}
        for _ in range(self.params.updates_per_batch):
            loss, stats = self._update(batch)
        info.update({f"optim/{k}": v for k, v in stats.items()})
        info["loss"] = loss
        info["step_seconds"] = time.perf_counter() - started
        info["time/update"] = info["step_seconds"] - info["time/rollout"]
        return info

    def _constraints(self, examples) -> dict:
        if self.constraint is None:
            return {}
        return {"constraints": [self.constraint.for_example(self.tokenizer, e) for e in examples]}

    def collect(self, step: int):
        """Sample groups until ``prompts_per_step`` survive the optimizer's filter.

        With several processes every rank draws the same global list of prompts each round
        and samples its own contiguous share (groups stay on one rank); ranks agree on the
        number of rounds and end with equally many groups, so their backward passes match.
        """
        params = self.params
        rng = random.Random(step_seed(self.seed, step, salt=1))
        target = params.prompts_per_step // self.world
        kept, dropped, all_rewards, components, observed = [], 0, [], [], []
        classes = []  # the stratify_by value of each kept group (per-class advantage normalisation)
        batch_generator = torch.Generator(device=self.accelerator.device).manual_seed(
            step_seed(self.seed, step, salt=self.rank))
        self.model.eval()
        for sampling_round in range(params.max_sampling_rounds):
            needs = self._all_ranks(target - len(kept))
            if sum(needs) == 0:
                break
            drawn = draw_examples(self.train, self.strata, rng, sum(needs))
            first = sum(needs[:self.rank])
            examples = drawn[first:first + needs[self.rank]]
            if not examples:
                continue
            generator = batch_generator if params.sampling_seeds == "batch" else \
                self._prompt_generators(step, sampling_round, first, len(examples))
            constraints = self._constraints(examples)
            rollouts = self.engine.generate(self.accelerator.unwrap_model(self.model), self.tokenizer,
                                            [self._prompt(e) for e in examples], params.group_size, generator=generator,
                                            **constraints)
            check_rollouts(rollouts, len(examples), params.group_size, params.rollout.name)
            if constraints:
                rollouts.allowed = self._allowed(rollouts, constraints["constraints"])
            expanded = [e for e in examples for _ in range(params.group_size)]
            prompts = [self._prompt(e) for e in expanded]
            rewards, parts = score_samples(self.reward_fns, self.combiner, prompts, rollouts.texts, expanded,
                                           params.on_reward_error, params.invalid_reward)
            all_rewards += rewards
            components += parts
            observed += self._observe(prompts, rollouts.texts, expanded)
            for g in range(len(examples)):
                group = slice(g * params.group_size, (g + 1) * params.group_size)
                if self.optimizer_algo.keep_group(rewards[group]):
                    kept.append((rollouts, g, rewards[group]))
                    classes.append(examples[g].get(params.stratify_by))
                else:
                    dropped += 1
        kept = kept[:min(self._all_ranks(len(kept)))]  # equal batches on every rank
        self.batch_classes = classes[:len(kept)]
        info = self._across_ranks({**self._rollout_metrics(all_rewards, components, dropped, kept),
                                   **mean_components(observed, "metric/")})
        info.update(self._summaries(info, step))
        return (self._batch(kept) if kept else None), info

    def _summaries(self, info: dict[str, float], step: int) -> dict[str, float]:
        """Batch-level metrics: a ``metrics`` function may define ``summarize(means, step)`` over
        the step's component means (e.g. the entropy of label shares); it may also stop the run."""
        means = {k.removeprefix("metric/"): v for k, v in info.items() if k.startswith("metric/")}
        out = {}
        for _, fn in self.metric_fns:
            if hasattr(fn, "summarize"):
                out.update({f"metric/{k}": v for k, v in fn.summarize(means, step + 1).items()})
        return out

    def _observe(self, prompts, texts, examples) -> list[dict[str, float | None]]:
        """The ``metrics`` functions' components per sample (not part of the reward)."""
        rows: list[dict[str, float | None]] = [{} for _ in texts]
        for _, fn in self.metric_fns:
            for row, parts in zip(rows, fn(prompts, texts, examples)):
                row.update(parts or {})
        return rows

    def _allowed(self, rollouts, constraints) -> list[dict[int, list[int]]]:
        """What the constraint allowed at each sampled position, replayed per sample."""
        g = self.params.group_size
        lengths = rollouts.mask.sum(dim=1).tolist()
        return [replay_allowed(constraints[row // g], rollouts.completion_ids[row, :int(n)].tolist())
                for row, n in enumerate(lengths)]

    def _all_ranks(self, count: int) -> list[int]:
        """``count`` of every rank, in rank order (a collective: every rank must call it)."""
        if self.world == 1:
            return [count]
        return self.accelerator.gather(torch.tensor([count], device=self.accelerator.device)).tolist()

    def _across_ranks(self, metrics: dict[str, float]) -> dict[str, float]:
        """Rank metrics reduced to the global batch's: group counts summed, the rest averaged over
        ranks (exact for means over equal shards; ``reward/std`` becomes the mean of rank stds)."""
        if self.world == 1:
            return metrics
        names = sorted(self._all_ranks_names(metrics))
        values = torch.tensor([metrics.get(n, float("nan")) for n in names], device=self.accelerator.device)
        gathered = self.accelerator.gather(values[None]).reshape(self.world, len(names))
        reduced = {}
        for column, name in enumerate(names):
            present = gathered[:, column][~torch.isnan(gathered[:, column])]
            reduced[name] = float(present.sum() if name.startswith("groups/") else present.mean())
        return reduced

    def _all_ranks_names(self, metrics: dict[str, float]) -> set[str]:
        from accelerate.utils import gather_object

        return {name for names in gather_object([sorted(metrics)]) for name in names}

    def _prompt_generators(self, step: int, sampling_round: int, first: int, count: int) -> list[torch.Generator]:
        """One generator per prompt, seeded by its position in the round's global draw: a prompt's
        samples do not depend on which prompts share its batch or its rank (``sampling_seeds: prompt``)."""
        base = step_seed(self.seed, step, salt=2 + sampling_round)
        return [torch.Generator(device=self.accelerator.device).manual_seed(step_seed(base, first + i))
                for i in range(count)]

    def _with_global_totals(self, batch: RolloutBatch) -> RolloutBatch:
        """Normalise every rank's loss by the totals of the global batch; the backward pass scales
        by the world size, so data-parallel averaging gives the single-process gradient."""
        if self.world == 1:
            return batch
        local = torch.tensor([batch.total_tokens, batch.num_sequences], device=self.accelerator.device)
        total_tokens, num_sequences = self.accelerator.reduce(local, reduction="sum").tolist()
        return replace(batch, total_tokens=int(total_tokens), num_sequences=int(num_sequences))

    def _prompt(self, example: dict[str, Any]) -> str:
        return chat_prompt(self.tokenizer, example[self.params.prompt_field], self.params.chat_template)

    def _batch(self, kept) -> RolloutBatch:
        g = self.params.group_size
        width = max(int(r.mask[i * g:(i + 1) * g].sum(dim=1).max()) for r, i, _ in kept)
        width = max(width, 1)
        def rows(tensor, i):
            tensor = tensor[i * g:(i + 1) * g, :width]
            return torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]))

        return RolloutBatch(
            prompt_ids=[r.prompt_ids[i] for r, i, _ in kept],
            completion_ids=torch.cat([rows(r.completion_ids, i) for r, i, _ in kept]),
            mask=torch.cat([rows(r.mask, i) for r, i, _ in kept]),
            old_logprobs=torch.cat([rows(r.logprobs, i) for r, i, _ in kept]),
            rewards=torch.tensor([x for _, _, rw in kept for x in rw], dtype=torch.float32, device=self.accelerator.device),
            groups=torch.arange(len(kept), device=self.accelerator.device).repeat_interleave(g),
            truncated=torch.cat([r.truncated[i * g:(i + 1) * g] for r, i, _ in kept]),
            group_size=g,
            allowed=None if kept[0][0].allowed is None else [a for r, i, _ in kept for a in r.allowed[i * g:(i + 1) * g]],
        )

    def _forward(self, batch: RolloutBatch, model, with_values: bool):
        return completion_logprobs(
            model, batch.prompt_ids, batch.completion_ids, batch.group_size, self._pad_id(),
            temperature=self.engine.temperature,
            value_head=self.extra.get("value_head") if with_values else None, allowed=batch.allowed,
            chunked=self.params.chunked_logits,
        )

    def _pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    ENGINE_GAP_LIMIT = 0.5  # nats per token; an engine sampling the policy it was given shows ~0-0.05

    def _check_engine_logprobs(self, batch: RolloutBatch) -> None:
        """Once per process, before the first update: the engine's log-probs of the sampled tokens
        agree with the policy's own. All-zero or shuffled log-probs pass every shape check but
        make every ratio wrong from step 1."""
        self._engine_checked = True
        part = next(self._micro_batches(batch))
        with torch.no_grad(), self.accelerator.autocast():
            trainer = self._forward(part, self.model, False)[0]
        gap = engine_logprob_gap(trainer, part.old_logprobs, part.mask)
        if gap > self.ENGINE_GAP_LIMIT:
            raise ReasonRLError(
                f"rollout engine {self.params.rollout.name!r} broke its contract in logprobs: they differ from the "
                f"policy's own log-probs of the same tokens by {gap:.3f} nats per token on average (limit "
                f"{self.ENGINE_GAP_LIMIT}); an engine returns the log-prob of each sampled token under the "
                f"distribution it sampled from (see the Rollouts contract)")

    @torch.no_grad()
    def _score_old(self, batch: RolloutBatch) -> dict[str, float]:
        """Reference log-probs, old values and (for an engine with its own numerics) the trainer's
        old log-probs, computed once per batch in micro-batches."""
        cap = getattr(self.engine, "importance_sampling_cap", None)
        if self.reference is None and not self.optimizer_algo.needs_values and not cap:
            return {}
        refs, values, olds = [], [], []
        for part in self._micro_batches(batch):
            with self.accelerator.autocast():  # the same precision as the update's forward pass
                if self.reference is not None:
                    refs.append(self._forward(part, self.reference, False)[0])
                if self.optimizer_algo.needs_values or cap:
                    logprobs, value = self._forward(part, self.model, self.optimizer_algo.needs_values)
                    olds.append(logprobs)
                    values.append(value)
        batch.ref_logprobs = torch.cat(refs) if refs else None
        batch.old_values = torch.cat(values) if self.optimizer_algo.needs_values else None
        return self._importance_weights(batch, torch.cat(olds), cap) if cap else {}

    @staticmethod
    def _importance_weights(batch: RolloutBatch, trainer_logprobs: torch.Tensor, cap: float) -> dict[str, float]:
        """Truncated importance sampling: the engine sampled from pi_engine, the loss is for
        pi_trainer. The ratio's old log-probs become the trainer's own, and each token's term
        is weighted by min(pi_trainer / pi_engine, cap)."""
        mask = batch.mask.bool()
        log_gap = (trainer_logprobs - batch.old_logprobs).float()
        weights = torch.exp(log_gap).clamp(max=cap) * batch.mask
        batch.old_logprobs, batch.is_weights = trainer_logprobs, weights
        tokens = max(int(mask.sum()), 1)
        return {"is/mean_weight": float(weights[mask].sum()) / tokens,
                "is/capped_share": float((torch.exp(log_gap) > cap)[mask].sum()) / tokens,
                "is/mean_abs_logprob_gap": float(log_gap.abs()[mask].sum()) / tokens}

    def _micro_batches(self, batch: RolloutBatch):
        size = self.params.micro_batch_prompts
        for start in range(0, len(batch.prompt_ids), size):
            yield batch.prompt_slice(start, min(start + size, len(batch.prompt_ids)))

    def _update(self, batch: RolloutBatch):
        total = 0.0
        stats: dict[str, list[float]] = {}
        for part in self._micro_batches(batch):
            with self.accelerator.autocast():
                logprobs, values = self._forward(part, self.model, self.optimizer_algo.needs_values)
                loss, part_stats = self.optimizer_algo.loss(part, logprobs, ref_logprobs=part.ref_logprobs, values=values)
            self.accelerator.backward(loss * self.world)  # DDP averages gradients over ranks
            total += float(loss.detach())
            for k, v in part_stats.items():
                stats.setdefault(k, []).append(v)
        stats_mean = {k: statistics.fmean(v) for k, v in stats.items()}
        stats_mean["grad_norm"] = self.optimizer_step()
        return total, stats_mean

    def _rollout_metrics(self, rewards, components, dropped, kept) -> dict[str, float]:
        metrics = {"reward/mean": statistics.fmean(rewards), "reward/std": statistics.pstdev(rewards),
                   "groups/dropped": float(dropped), "groups/kept": float(len(kept))}
        for name in sorted({k for c in components for k in c}):
            # a component's mean is over the valid samples it applies to; reward/invalid is their share
            values = [c[name] for c in components if c.get(name) is not None and (name == INVALID or not c[INVALID])]
            if values:
                metrics[f"reward/{name}"] = statistics.fmean(values)
        g = self.params.group_size
        lengths = [float(r.mask[i * g:(i + 1) * g].sum(dim=1).float().mean()) for r, i, _ in kept]
        if lengths:
            metrics["completion/length"] = statistics.fmean(lengths)
            # answers the token budget cut: a reward computed on a cut answer says little about the policy
            metrics["completion/cut"] = statistics.fmean(float(r.truncated[i * g:(i + 1) * g].float().mean())
                                                         for r, i, _ in kept)
        return metrics

    def _summary(self, history: list[dict[str, float]]) -> dict[str, Any]:
        rewards = [h["reward/mean"] for h in history]
        window = max(1, len(rewards) // 5)
        summary = {
            "steps": len(history),
            "reward_first": statistics.fmean(rewards[:window]) if rewards else None,
            "reward_last": statistics.fmean(rewards[-window:]) if rewards else None,
            "groups_dropped": sum(h.get("groups/dropped", 0.0) for h in history),
            "model_dir": str(self.context.stage_dir / "model"),
        }
        if self.accelerator.is_main_process:
            atomic_write_json(self.context.stage_dir / "history.json", history)
        return summary
