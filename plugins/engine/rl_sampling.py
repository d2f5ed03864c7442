"""The sampling side of the ``rl`` stage: draw prompts, roll out groups, score them, keep the
groups the optimizer learns from, and assemble the batch."""

from __future__ import annotations

import random
import statistics
from typing import Any

import torch

from reasonrl.core.contracts import RolloutBatch
from reasonrl.core.errors import ReasonRLError
from reasonrl.plugins.engine.models import chat_prompt
from reasonrl.plugins.engine.rollout import replay_allowed
from reasonrl.plugins.engine.scoring import check_rollouts
from reasonrl.plugins.engine.training import step_seed
from reasonrl.plugins.rewards import INVALID, score_samples


def mean_components(rows: list[dict[str, float | None]], prefix: str) -> dict[str, float]:
    """Mean of each component over the samples where it applies (not None)."""
    names = sorted({name for row in rows for name in row})
    means = {}
    for name in names:
        values = [row[name] for row in rows if row.get(name) is not None]
        if values:
            means[prefix + name] = statistics.fmean(values)
    return means

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


class RolloutCollector:
    """Mixin of ``RLStage``: one step's rollouts, rewards and batch (reads the stage's params,
    engine, reward functions and optimizer)."""

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
            rollouts, rewards, parts, seen = self._roll_out(examples, generator)
            all_rewards += rewards
            components += parts
            observed += seen
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

    def _roll_out(self, examples: list[dict], generator):
        """G completions per example, checked against the engine contract, with their rewards,
        reward components and metric components."""
        params = self.params
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
        return rollouts, rewards, parts, self._observe(prompts, rollouts.texts, expanded)

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

    def _prompt_generators(self, step: int, sampling_round: int, first: int, count: int) -> list[torch.Generator]:
        """One generator per prompt, seeded by its position in the round's global draw: a prompt's
        samples do not depend on which prompts share its batch or its rank (``sampling_seeds: prompt``)."""
        base = step_seed(self.seed, step, salt=2 + sampling_round)
        return [torch.Generator(device=self.accelerator.device).manual_seed(step_seed(base, first + i))
                for i in range(count)]

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
