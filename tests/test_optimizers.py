"""Every loss and advantage against numbers worked out by hand from docs/reference.md (policy optimizers)."""

import math

import pytest
import torch

from reasonrl.core.contracts import RolloutBatch
from reasonrl.plugins.engine.optimizers import (
    PPO,
    aggregate,
    clipped_token_loss,
    gae,
    group_advantages,
    kl_penalty,
    terminal_rewards,
)
from reasonrl.plugins.engine.optimizers import DAPOParams, DrGRPOParams, GRPOParams, PPOParams, dapo as DAPO, dr_grpo as DrGRPO, grpo as GRPO


def batch(rewards, mask, groups=None, group_size=2, old=None):
    mask = torch.tensor(mask, dtype=torch.float32)
    n = mask.shape[0]
    return RolloutBatch(
        prompt_ids=[torch.tensor([1])] * (n // group_size), completion_ids=torch.zeros(mask.shape, dtype=torch.long),
        mask=mask, old_logprobs=torch.zeros(mask.shape) if old is None else old,
        rewards=torch.tensor(rewards, dtype=torch.float32),
        groups=torch.tensor(groups if groups is not None else [i // group_size for i in range(n)]),
        truncated=torch.zeros(n, dtype=torch.bool), group_size=group_size,
    )


def test_group_advantages_by_hand():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.5, 0.5]), torch.tensor([0, 0, 1, 1]), scale_by_std=True)
    # group 0: mean 0.5, population std 0.5 -> +-1; group 1: all equal -> 0
    assert adv.tolist() == pytest.approx([1.0, -1.0, 0.0, 0.0], abs=1e-5)
    assert group_advantages(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), False).tolist() == [0.5, -0.5]


def test_one_sample_group_gets_zero_advantage():
    adv = group_advantages(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0, 1, 1]), scale_by_std=True)
    assert adv[0] == 0.0 and not torch.isnan(adv).any()


def test_clipped_loss_by_hand():
    old = torch.zeros(4)
    new = torch.log(torch.tensor([1.5, 1.5, 0.5, 1.0]))
    adv = torch.tensor([1.0, -1.0, -1.0, 2.0])
    loss, clipped = clipped_token_loss(new, old, adv, 0.2, 0.2)
    # r=1.5,A=1 -> -min(1.5,1.2)=-1.2 ; r=1.5,A=-1 -> -min(-1.5,-1.2)=1.5 ; r=0.5,A=-1 -> -min(-0.5,-0.8)=0.8 ; r=1 -> -2
    assert loss.tolist() == pytest.approx([-1.2, 1.5, 0.8, -2.0])
    assert clipped.tolist() == [True, False, True, False]
    dapo_loss, _ = clipped_token_loss(new, old, adv, 0.2, 0.28)
    assert dapo_loss[0].item() == pytest.approx(-1.28)


def test_kl_estimators_by_hand():
    logp, ref = torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25]))
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 + math.log(2) - 1)
    assert kl_penalty(logp, logp, "k3").item() == 0.0


def test_aggregations_by_hand():
    token_loss = torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0], [9.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # last row fully masked
    assert aggregate(token_loss, mask, "token", 3, 3).item() == pytest.approx(6 / 3)
    assert aggregate(token_loss, mask, "sequence", 3, 3).item() == pytest.approx((1.5 + 3.0 + 0.0) / 3)
    assert aggregate(token_loss, mask, "constant", 3, 3, constant_length=4).item() == pytest.approx(6 / 12)


def test_gae_by_hand():
    values = torch.tensor([[0.5, 0.6, 0.7]])
    adv, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), values, torch.ones(1, 3), gamma=1.0, lam=0.5)
    assert adv.tolist()[0] == pytest.approx([0.225, 0.25, 0.3])
    assert ret.tolist()[0] == pytest.approx([0.725, 0.85, 1.0])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    rewards = terminal_rewards(torch.tensor([1.0]), mask)
    assert rewards.tolist() == [[0.0, 1.0, 0.0]]
    adv, _ = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    assert adv.tolist()[0] == pytest.approx([0.3, 0.4, 0.0])


def test_grpo_dr_grpo_dapo_end_to_end_numbers():
    b = batch([1.0, 0.0], [[1, 1], [1, 0]])
    new = torch.log(torch.tensor([[1.5, 1.0], [1.0, 1.0]]))
    grpo = GRPO(GRPOParams())
    b = grpo.prepare(b)
    assert b.advantages.flatten().tolist() == pytest.approx([1, 1, -1, 0], abs=1e-5)
    loss, stats = grpo.loss(b, new)
    # tokens: -1.2, -1 | +1 ; sequence means: -1.1, 1.0 -> mean -0.05
    assert loss.item() == pytest.approx(-0.05, abs=1e-5)
    assert stats["clip_fraction"] == pytest.approx(1 / 3)
    dapo = DAPO(DAPOParams())
    b = dapo.prepare(b)
    assert dapo.loss(b, new)[0].item() == pytest.approx((-1.28 - 1 + 1) / 3, abs=1e-5)
    dr = DrGRPO(DrGRPOParams(max_completion_length=4))
    b = dr.prepare(b)  # no std: +-0.5
    assert dr.loss(b, new)[0].item() == pytest.approx((-0.6 - 0.5 + 0.5) / (2 * 4), abs=1e-5)


def test_grpo_kl_term_and_reference_need():
    assert not GRPO(GRPOParams()).needs_reference
    grpo = GRPO(GRPOParams(beta=0.1, kl_estimator="k1"))
    assert grpo.needs_reference
    b = batch([1.0, 1.0], [[1], [1]])
    b = grpo.prepare(b)  # all equal -> 0
    new = torch.log(torch.tensor([[0.5], [0.5]]))
    ref = torch.log(torch.tensor([[0.25], [0.25]]))
    loss, stats = grpo.loss(b, new, ref_logprobs=ref)
    assert loss.item() == pytest.approx(0.1 * math.log(2)) and stats["kl"] == pytest.approx(math.log(2))


def test_dapo_kl_term_by_hand():
    """DAPO with an anchor: the token-mean loss plus beta x k3 KL, on tokens of unequal rewards."""
    assert not DAPO(DAPOParams()).needs_reference
    dapo = DAPO(DAPOParams(beta=0.04))
    assert dapo.needs_reference
    new = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    b = dapo.prepare(batch([1.0, 0.0], [[1, 1], [1, 0]], old=new.clone()))  # on-policy: ratio 1
    ref = torch.log(torch.tensor([[0.25, 0.5], [0.5, 0.5]]))
    k3 = 0.5 + math.log(2) - 1  # ref/new - log(ref/new) - 1 with ref/new = 0.5 on the first token
    a = b.advantages
    policy = -(a[0, 0] + a[0, 1] + a[1, 0]).item() / 3  # ratio 1 everywhere: -A per token, mean over 3 tokens
    loss, stats = dapo.loss(b, new, ref_logprobs=ref)
    assert loss.item() == pytest.approx(policy + 0.04 * k3 / 3, abs=1e-6)
    assert stats["kl"] == pytest.approx(k3 / 3)


def test_dr_grpo_kl_term_by_hand():
    """Dr. GRPO's constant-length sum: the policy tokens and beta x k1 over batch x max length."""
    dr = DrGRPO(DrGRPOParams(beta=0.5, kl_estimator="k1", max_completion_length=4))
    assert dr.needs_reference and not DrGRPO(DrGRPOParams()).needs_reference
    new = torch.log(torch.tensor([[0.5], [0.5]]))
    b = dr.prepare(batch([1.0, 1.0], [[1], [1]], old=new.clone()))  # equal rewards: advantages 0
    loss, stats = dr.loss(b, new, ref_logprobs=torch.log(torch.tensor([[0.25], [0.25]])))
    assert loss.item() == pytest.approx(0.5 * 2 * math.log(2) / (2 * 4)) and stats["kl"] == pytest.approx(math.log(2))


def test_dapo_dynamic_sampling_and_truncation_mask():
    dapo = DAPO(DAPOParams(mask_truncated=True))
    assert not dapo.keep_group([1.0, 1.0, 1.0]) and dapo.keep_group([1.0, 0.0])
    assert DAPO(DAPOParams(dynamic_sampling=False)).keep_group([1.0, 1.0])
    b = batch([1.0, 0.0], [[1, 1], [1, 1]])
    b.truncated = torch.tensor([False, True])
    prepared = dapo.prepare(b)
    assert prepared.mask.tolist() == [[1, 1], [0, 0]] and prepared.total_tokens == 2
    assert b.mask.tolist() == [[1, 1], [1, 1]] and b.advantages is None  # the input batch is left as it was


def test_micro_batch_losses_sum_to_the_full_batch_loss():
    torch.manual_seed(0)
    mask = (torch.rand(8, 5) > 0.3).float()
    b = batch(torch.rand(8).tolist(), mask.tolist(), group_size=2, old=torch.randn(8, 5) * 0.1)
    new = torch.randn(8, 5) * 0.1
    for algo in (GRPO(GRPOParams()), DAPO(DAPOParams()), DrGRPO(DrGRPOParams(max_completion_length=5))):
        b = algo.prepare(b)
        full = algo.loss(b, new)[0]
        parts = sum(algo.loss(b.prompt_slice(i, i + 1), new[2 * i:2 * i + 2])[0] for i in range(4))
        assert parts.item() == pytest.approx(full.item(), abs=1e-6)


def test_ppo_losses_by_hand():
    ppo = PPO(PPOParams(gamma=1.0, lam=1.0, whiten_advantages=False, value_coef=0.5))
    b = batch([1.0], [[1, 1]], group_size=1)
    b.old_values = torch.tensor([[0.2, 0.4]])
    b = ppo.prepare(b)
    # lam = gamma = 1: A_t = R - V_t -> [0.8, 0.6]; returns = [1, 1]
    assert b.advantages.tolist()[0] == pytest.approx([0.8, 0.6])
    assert b.returns.tolist()[0] == pytest.approx([1.0, 1.0])
    loss, stats = ppo.loss(b, torch.zeros(1, 2), values=torch.tensor([[0.2, 0.4]]))
    policy = -(0.8 + 0.6) / 2
    value = 0.5 * ((0.8**2) + (0.6**2)) / 2
    assert stats["value_loss"] == pytest.approx(value)
    assert loss.item() == pytest.approx(policy + 0.5 * value)
    # the value clip bounds how far new values move from old ones
    _, stats = ppo.loss(b, torch.zeros(1, 2), values=torch.tensor([[1.0, 1.0]]))
    # clipped values: 0.2 + 0.2 = 0.4 and 0.4 + 0.2 = 0.6 -> max(0, 0.6^2), max(0, 0.4^2)
    assert stats["value_loss"] == pytest.approx(0.5 * (0.36 + 0.16) / 2)
