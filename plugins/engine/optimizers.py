"""Policy optimizers: small pure functions over tensors, composed per algorithm.

Shapes: N samples, T completion tokens. ``mask`` is 1 on trained tokens. Losses are
normalised with totals taken from the *whole* batch (``batch.total_tokens``,
``batch.num_sequences``), so summing the losses of micro-batches gives the full-batch
loss exactly, whatever the gradient-accumulation split.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch
from pydantic import Field

from reasonrl.core.contracts import RolloutBatch
from reasonrl.core.registry import Params


class GRPOParams(Params):
    epsilon: float = Field(0.2, gt=0, description="clip range: ratio kept in [1 - eps, 1 + eps]")
    beta: float = Field(0.0, ge=0, description="KL weight to a frozen reference; 0 loads no reference")
    kl_estimator: str = Field("k3", pattern="^(k1|k3)$")
    """k1 (log-ratio) or k3 (unbiased, non-negative) KL estimator"""
    scale_rewards: bool = True
    """divide advantages by the group's reward std"""
    std_eps: float = 1e-6
    """added to the group's reward std before dividing"""


class DrGRPOParams(Params):
    epsilon: float = Field(0.2, gt=0)
    """ratio clip: [1 - epsilon, 1 + epsilon]"""
    beta: float = Field(0.0, ge=0)
    """weight of the KL penalty to the reference model (0: no reference)"""
    kl_estimator: str = Field("k3", pattern="^(k1|k3)$")
    """k1 (log-ratio) or k3 (unbiased, non-negative) KL estimator"""
    max_completion_length: int = Field(256, gt=0, description="the constant that replaces per-sequence length")


class DAPOParams(Params):
    epsilon_low: float = Field(0.2, gt=0)
    """lower clip of the ratio: 1 - epsilon_low"""
    epsilon_high: float = Field(0.28, gt=0)
    """upper clip of the ratio (clip-higher: larger than epsilon_low)"""
    dynamic_sampling: bool = True
    """drop groups whose rewards are all equal and sample more prompts"""
    mask_truncated: bool = False
    """leave completions cut at max_new_tokens out of the loss"""
    std_eps: float = 1e-6
    """added to the group's reward std before dividing"""
    beta: float = Field(0.0, ge=0, description=(
        "KL weight to a frozen reference (the paper's DAPO drops it: 0; small-model recipes anchor with 1e-3 to 0.04)"))
    kl_estimator: str = Field("k3", pattern="^(k1|k3)$")
    """k1 (log-ratio) or k3 (unbiased, non-negative) KL estimator"""


class PPOParams(Params):
    epsilon: float = Field(0.2, gt=0)
    """ratio clip: [1 - epsilon, 1 + epsilon]"""
    value_clip: float = Field(0.2, gt=0)
    """clip of the value prediction's change from the rollout's value"""
    gamma: float = Field(1.0, ge=0, le=1)
    """discount factor of GAE"""
    lam: float = Field(0.95, ge=0, le=1)
    """GAE lambda (bias-variance trade-off of the advantages)"""
    value_coef: float = Field(0.5, ge=0)
    """weight of the value loss"""
    whiten_advantages: bool = True
    """normalise advantages to mean 0 and std 1 over the batch"""


# ---------------------------------------------------------------- pure pieces
def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, scale_by_std: bool, eps: float = 1e-6) -> torch.Tensor:
    """(R_i - mean_g R) [/ (std_g R + eps)] with the population std of the group.

    A one-sample group or a group of equal rewards gets advantage 0.
    """
    rewards = rewards.float()
    _, inverse = torch.unique(groups, return_inverse=True)
    count = torch.zeros(int(inverse.max()) + 1, device=rewards.device).index_add_(0, inverse, torch.ones_like(rewards))
    mean = torch.zeros_like(count).index_add_(0, inverse, rewards) / count
    centered = rewards - mean[inverse]
    if not scale_by_std:
        return centered
    var = torch.zeros_like(count).index_add_(0, inverse, centered**2) / count
    return centered / (var.sqrt()[inverse] + eps)


def clipped_token_loss(
    new_logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A), and where clipping bit.
    ``is_weights`` (truncated importance weights of an off-policy engine) scale each token's term."""
    ratio = torch.exp(new_logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    return (loss if is_weights is None else loss * is_weights), (clipped < unclipped)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL(pi || ref) estimate: k1 = log pi - log ref; k3 = e^(ref - pi) - (ref - pi) - 1."""
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    return torch.exp(log_ratio) - log_ratio - 1


def aggregate(token_loss: torch.Tensor, mask: torch.Tensor, mode: str, num_sequences: int, total_tokens: int,
              constant_length: int = 1) -> torch.Tensor:
    """Reduce per-token losses to a scalar.

    - ``token``: sum over all tokens / tokens in the whole batch (DAPO);
    - ``sequence``: mean over each sequence's tokens, then / sequences in the batch (GRPO);
    - ``constant``: sum / (sequences * constant_length) (Dr.GRPO).
    """
    masked = token_loss * mask
    if mode == "token":
        return masked.sum() / max(total_tokens, 1)
    if mode == "sequence":
        lengths = mask.sum(dim=1)
        per_sequence = masked.sum(dim=1) / lengths.clamp(min=1)
        return per_sequence.sum() / max(num_sequences, 1)
    if mode == "constant":
        return masked.sum() / max(num_sequences * constant_length, 1)
    raise ValueError(f"aggregation mode {mode!r}; expected token, sequence or constant")


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over the valid tokens of each row: delta_t = r_t + gamma V_{t+1} - V_t,
    A_t = delta_t + gamma lam A_{t+1}; V after the last valid token is 0. Returns (A, A + V)."""
    advantages = torch.zeros_like(values)
    next_value = torch.zeros(values.shape[0], dtype=values.dtype, device=values.device)
    next_advantage = torch.zeros_like(next_value)
    for t in reversed(range(values.shape[1])):
        valid = mask[:, t] > 0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        current = delta + gamma * lam * next_advantage
        advantages[:, t] = torch.where(valid, current, torch.zeros_like(current))
        next_value = torch.where(valid, values[:, t], next_value)
        next_advantage = torch.where(valid, current, next_advantage)
    return advantages, advantages + values


def whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    count = mask.sum().clamp(min=1)
    mean = (values * mask).sum() / count
    var = (((values - mean) ** 2) * mask).sum() / count
    return (values - mean) / torch.sqrt(var + eps) * mask


def _stats(token_loss, mask, clipped) -> dict[str, float]:
    tokens = mask.sum().clamp(min=1)
    return {"clip_fraction": float((clipped.float() * mask).sum() / tokens)}


def _mean_kl(kl: torch.Tensor, mask: torch.Tensor) -> float:
    return float((kl.detach() * mask).sum() / mask.sum().clamp(min=1))


# ---------------------------------------------------------------- optimizers
@dataclass(frozen=True)
class ClipRange:
    low: float
    high: float


@dataclass(frozen=True)
class KLTerm:
    beta: float = 0.0
    estimator: str = "k3"


class GroupPolicyOptimizer:
    """The GRPO family, composed from parts: group-relative advantages (with or without
    std scaling), a clip range, a loss aggregation and an optional KL term; plus DAPO's
    dynamic sampling and truncated-sample masking. ``grpo``, ``dr_grpo`` and ``dapo`` are
    this class with different parts."""

    needs_values = False

    def __init__(self, params, *, scale_by_std: bool, std_eps: float, clip: ClipRange, aggregation: str,
                 kl: KLTerm = KLTerm(), constant_length: int = 1, dynamic_sampling: bool = False,
                 mask_truncated: bool = False) -> None:
        self.params = params
        self.scale_by_std, self.std_eps, self.clip, self.aggregation = scale_by_std, std_eps, clip, aggregation
        self.kl, self.constant_length = kl, constant_length
        self.dynamic_sampling, self.mask_truncated = dynamic_sampling, mask_truncated
        self.needs_reference = kl.beta > 0

    def keep_group(self, rewards: Sequence[float]) -> bool:
        return not self.dynamic_sampling or max(rewards) - min(rewards) > 1e-9

    def prepare(self, batch: RolloutBatch) -> RolloutBatch:
        mask = batch.mask
        if self.mask_truncated:
            mask = mask * (~batch.truncated)[:, None].to(mask.dtype)
        advantages = group_advantages(batch.rewards, batch.groups, self.scale_by_std, self.std_eps)[:, None] * mask
        return replace(batch, mask=mask, total_tokens=int(mask.sum()), advantages=advantages)

    def loss(self, batch, new_logprobs, ref_logprobs=None, values=None):
        mask = batch.mask
        token_loss, clipped = clipped_token_loss(new_logprobs, batch.old_logprobs, batch.advantages,
                                                 self.clip.low, self.clip.high, batch.is_weights)
        stats = _stats(token_loss, mask, clipped)
        if self.kl.beta > 0:
            kl = kl_penalty(new_logprobs, ref_logprobs, self.kl.estimator)
            token_loss = token_loss + self.kl.beta * kl
            stats["kl"] = _mean_kl(kl, mask)
        loss = aggregate(token_loss, mask, self.aggregation, batch.num_sequences, batch.total_tokens,
                         self.constant_length)
        return loss, stats


def grpo(params: GRPOParams) -> GroupPolicyOptimizer:
    """Group-normalised advantages, clipped ratio, per-sequence mean, optional KL."""
    return GroupPolicyOptimizer(params, scale_by_std=params.scale_rewards, std_eps=params.std_eps,
                                clip=ClipRange(params.epsilon, params.epsilon), aggregation="sequence",
                                kl=KLTerm(params.beta, params.kl_estimator))


def dr_grpo(params: DrGRPOParams) -> GroupPolicyOptimizer:
    """GRPO without std scaling and without per-sequence length normalisation."""
    return GroupPolicyOptimizer(params, scale_by_std=False, std_eps=1e-6, clip=ClipRange(params.epsilon, params.epsilon),
                                aggregation="constant", kl=KLTerm(params.beta, params.kl_estimator),
                                constant_length=params.max_completion_length)


def dapo(params: DAPOParams) -> GroupPolicyOptimizer:
    """Clip-higher, token-level loss, dynamic sampling, optional truncated-sample masking."""
    return GroupPolicyOptimizer(params, scale_by_std=True, std_eps=params.std_eps,
                                clip=ClipRange(params.epsilon_low, params.epsilon_high), aggregation="token",
                                kl=KLTerm(params.beta, params.kl_estimator),
                                dynamic_sampling=params.dynamic_sampling, mask_truncated=params.mask_truncated)


class PPO:
    """Value head, GAE on a terminal sequence reward, clipped policy and value losses."""

    needs_values = True
    needs_reference = False

    def __init__(self, params: PPOParams) -> None:
        self.params = params

    def keep_group(self, rewards: Sequence[float]) -> bool:
        return True

    def prepare(self, batch: RolloutBatch) -> RolloutBatch:
        token_rewards = terminal_rewards(batch.rewards, batch.mask)
        advantages, returns = gae(token_rewards, batch.old_values, batch.mask, self.params.gamma, self.params.lam)
        if self.params.whiten_advantages:
            advantages = whiten(advantages, batch.mask)
        return replace(batch, advantages=advantages, returns=returns)

    def loss(self, batch, new_logprobs, ref_logprobs=None, values=None):
        mask = batch.mask
        eps = self.params.epsilon
        policy_tokens, clipped = clipped_token_loss(new_logprobs, batch.old_logprobs, batch.advantages, eps, eps,
                                                    batch.is_weights)
        value_clipped = batch.old_values + torch.clamp(values - batch.old_values, -self.params.value_clip, self.params.value_clip)
        value_tokens = 0.5 * torch.maximum((values - batch.returns) ** 2, (value_clipped - batch.returns) ** 2)
        policy_loss = aggregate(policy_tokens, mask, "token", batch.num_sequences, batch.total_tokens)
        value_loss = aggregate(value_tokens, mask, "token", batch.num_sequences, batch.total_tokens)
        stats = _stats(policy_tokens, mask, clipped)
        stats["value_loss"] = float(value_loss.detach())
        return policy_loss + self.params.value_coef * value_loss, stats


def terminal_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Place each sequence's scalar reward on its last valid token."""
    token_rewards = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    lengths = mask.sum(dim=1).long()
    rows = torch.nonzero(lengths > 0).flatten()
    token_rewards[rows, lengths[rows] - 1] = rewards[rows].float()
    return token_rewards
