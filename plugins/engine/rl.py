"""The ``rl`` stage: dataset -> rollouts -> rewards -> combiner -> filter -> optimizer -> step."""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import replace
from typing import Any, Literal

import torch
from pydantic import Field

from reasonrl.core.config import CombinerRef, ConstraintRef, OptimizerRef, RewardRef, RolloutEngineRef
from reasonrl.core.contracts import StageContext
from reasonrl.core.errors import ReasonRLError, StopTraining
from reasonrl.core.io import atomic_write_json
from reasonrl.plugins.engine.rl_sampling import RolloutCollector, strata_of
from reasonrl.plugins.engine.rl_update import PolicyUpdater, balance_by_class
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
    sampling_seeds: Literal["batch", "prompt"] = Field("prompt", description=(
        "prompt: one random stream per prompt, so results do not depend on batching or on the number of "
        "processes; batch: one per rollout batch (what runs before 2026-12-02 used; bench/decode_speed.py "
        "--prompt-streams measures the difference)"))


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


class RLStage(RolloutCollector, PolicyUpdater, Trainer):
    """On-policy RL with any registered optimizer, rollout engine and rewards."""

    def run(self, context: StageContext) -> dict[str, Any]:
        params = self.params
        self.context = context
        if params.deepspeed is not None:
            raise ReasonRLError(DEEPSPEED_IN_RL.format(stage=context.stage_id))
        self._build_components(context)
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
        self.state = self.resumed_extras()  # a subclass adds its own entries
        history = self.state.setdefault("history", [])
        bar = self.progress(f"rl[{params.optimizer.name}]")
        window = max((getattr(fn, "guard_window", 0) for _, fn in self.metric_fns), default=0)
        policies: deque = deque(maxlen=window + 1)  # start-of-step policies a guard may fall back on
        stopped: dict[str, Any] = {}
        if self.start_step == 0:
            self.before_steps()
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
            self.after_step(step + 1)
            self.maybe_checkpoint(step + 1, self.state)
        bar.close()
        selected = self.before_save()
        self.save_model({**self.state, **stopped})
        return {**self._summary(history), **stopped, **selected}

    def _build_components(self, context: StageContext) -> None:
        params = self.params
        self.optimizer_algo = context.build(params.optimizer)
        self.engine = context.build(params.rollout)
        self.constraint = context.build(params.constraint) if params.constraint else None
        self.reward_fns = [(ref.name, context.build(ref)) for ref in params.rewards]
        self.metric_fns = [(ref.name, context.build(ref)) for ref in params.metrics]
        self.combiner = context.build(params.combiner)
        self.train = self.examples(params.split, (params.prompt_field,))
        self.strata = strata_of(self.train, params.stratify_by, context.stage_id) \
            if params.prompt_draws == "stratified" else None

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
