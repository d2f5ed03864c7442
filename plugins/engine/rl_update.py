"""The updating side of the ``rl`` stage: old, reference and engine log-probs, advantages per
class, and the optimizer's loss over micro-batches."""

from __future__ import annotations

import statistics
from dataclasses import replace

import torch

from reasonrl.core.contracts import RolloutBatch
from reasonrl.core.errors import ReasonRLError
from reasonrl.plugins.engine.scoring import completion_logprobs, engine_logprob_gap


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


class PolicyUpdater:
    """Mixin of ``RLStage``: scores a batch under the policy (and the reference) and updates it."""

    ENGINE_GAP_LIMIT = 0.5  # nats per token; an engine sampling the policy it was given shows ~0-0.05

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

    def _with_global_totals(self, batch: RolloutBatch) -> RolloutBatch:
        """Normalise every rank's loss by the totals of the global batch; the backward pass scales
        by the world size, so data-parallel averaging gives the single-process gradient."""
        if self.world == 1:
            return batch
        local = torch.tensor([batch.total_tokens, batch.num_sequences], device=self.accelerator.device)
        total_tokens, num_sequences = self.accelerator.reduce(local, reduction="sum").tolist()
        return replace(batch, total_tokens=int(total_tokens), num_sequences=int(num_sequences))
