"""Policy optimizers: small pure functions over tensors, composed per algorithm.

Shapes: N samples, T completion tokens. ``mask`` is 1 on trained tokens. Losses are
normalised with totals taken from the *whole* batch (``batch.total_tokens``,
``batch.num_sequences``), so summing the losses of micro-batches gives the full-batch
loss exactly, whatever the gradient-accumulation split.
"""

from __future__ import annotations

from typing import Sequence

import torch

from reasonrl.plugins.params import DAPOParams, DrGRPOParams, GRPOParams, PPOParams


# ---------------------------------------------------------------- pure pieces
def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, scale_by_std: bool, eps: float = 1e-6) -> torch.Tensor:
    """(R_i - mean_g R) [/ (std_g R + eps)] with the population std of the group.

    A one-sample group or a group of equal rewards gets advantage 0.
    """
    rewards = rewards.float()
    _, inverse = torch.unique(groups, return_inverse=True)
    count = torch.zeros(int(inverse.max()) + 1).index_add_(0, inverse, torch.ones_like(rewards))
    mean = torch.zeros_like(count).index_add_(0, inverse, rewards) / count
    centered = rewards - mean[inverse]
    if not scale_by_std:
        return centered
    var = torch.zeros_like(count).index_add_(0, inverse, centered**2) / count
    return centered / (var.sqrt()[inverse] + eps)


def clipped_token_loss(
    new_logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A), and where clipping bit."""
    ratio = torch.exp(new_logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * advantages
    return -torch.minimum(unclipped, clipped), (clipped < unclipped)


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
    next_value = torch.zeros(values.shape[0], dtype=values.dtype)
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
class GRPO:
    """Group-normalised advantages, clipped ratio, per-sequence mean, optional KL."""

    needs_values = False
    aggregation = "sequence"

    def __init__(self, params: GRPOParams) -> None:
        self.params = params
        self.needs_reference = params.beta > 0

    def keep_group(self, rewards: Sequence[float]) -> bool:
        return True

    def sequence_advantages(self, batch) -> torch.Tensor:
        return group_advantages(batch.rewards, batch.groups, self.params.scale_rewards, self.params.std_eps)

    def advantages(self, batch) -> torch.Tensor:
        return self.sequence_advantages(batch)[:, None] * batch.mask

    def _clip_range(self) -> tuple[float, float]:
        return self.params.epsilon, self.params.epsilon

    def _constant_length(self) -> int:
        return 1

    def loss(self, batch, new_logprobs, ref_logprobs=None, values=None):
        mask = batch.mask
        token_loss, clipped = clipped_token_loss(new_logprobs, batch.old_logprobs, batch.advantages, *self._clip_range())
        stats = _stats(token_loss, mask, clipped)
        beta = getattr(self.params, "beta", 0.0)
        if beta > 0:
            kl = kl_penalty(new_logprobs, ref_logprobs, self.params.kl_estimator)
            token_loss = token_loss + beta * kl
            stats["kl"] = _mean_kl(kl, mask)
        loss = aggregate(token_loss, mask, self.aggregation, batch.num_sequences, batch.total_tokens,
                         self._constant_length())
        return loss, stats


class DrGRPO(GRPO):
    """GRPO without std scaling and without per-sequence length normalisation."""

    aggregation = "constant"

    def sequence_advantages(self, batch) -> torch.Tensor:
        return group_advantages(batch.rewards, batch.groups, scale_by_std=False)

    def _constant_length(self) -> int:
        return self.params.max_completion_length


class DAPO(GRPO):
    """Clip-higher, token-level loss, dynamic sampling, optional truncated-sample masking."""

    aggregation = "token"
    needs_reference = False

    def __init__(self, params: DAPOParams) -> None:
        self.params = params

    def keep_group(self, rewards: Sequence[float]) -> bool:
        return not self.params.dynamic_sampling or max(rewards) - min(rewards) > 1e-9

    def sequence_advantages(self, batch) -> torch.Tensor:
        return group_advantages(batch.rewards, batch.groups, scale_by_std=True, eps=self.params.std_eps)

    def advantages(self, batch) -> torch.Tensor:
        if self.params.mask_truncated:
            batch.mask = batch.mask * (~batch.truncated)[:, None].to(batch.mask.dtype)
            batch.total_tokens = int(batch.mask.sum())
        return super().advantages(batch)

    def _clip_range(self) -> tuple[float, float]:
        return self.params.epsilon_low, self.params.epsilon_high


class PPO:
    """Value head, GAE on a terminal sequence reward, clipped policy and value losses."""

    needs_values = True
    needs_reference = False

    def __init__(self, params: PPOParams) -> None:
        self.params = params

    def keep_group(self, rewards: Sequence[float]) -> bool:
        return True

    def advantages(self, batch) -> torch.Tensor:
        token_rewards = terminal_rewards(batch.rewards, batch.mask)
        advantages, returns = gae(token_rewards, batch.old_values, batch.mask, self.params.gamma, self.params.lam)
        batch.returns = returns
        return whiten(advantages, batch.mask) if self.params.whiten_advantages else advantages

    def loss(self, batch, new_logprobs, ref_logprobs=None, values=None):
        mask = batch.mask
        eps = self.params.epsilon
        policy_tokens, clipped = clipped_token_loss(new_logprobs, batch.old_logprobs, batch.advantages, eps, eps)
        value_clipped = batch.old_values + torch.clamp(values - batch.old_values, -self.params.value_clip, self.params.value_clip)
        value_tokens = 0.5 * torch.maximum((values - batch.returns) ** 2, (value_clipped - batch.returns) ** 2)
        policy_loss = aggregate(policy_tokens, mask, "token", batch.num_sequences, batch.total_tokens)
        value_loss = aggregate(value_tokens, mask, "token", batch.num_sequences, batch.total_tokens)
        stats = _stats(policy_tokens, mask, clipped)
        stats["value_loss"] = float(value_loss.detach())
        return policy_loss + self.params.value_coef * value_loss, stats


def terminal_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Place each sequence's scalar reward on its last valid token."""
    token_rewards = torch.zeros(mask.shape, dtype=torch.float32)
    lengths = mask.sum(dim=1).long()
    rows = torch.nonzero(lengths > 0).flatten()
    token_rewards[rows, lengths[rows] - 1] = rewards[rows].float()
    return token_rewards
