"""Stratified prompt draws: every class equally often per step, whatever the split's mix."""

import random
from collections import Counter

import pytest

from reasonrl.core.errors import ReasonRLError
from reasonrl.plugins.engine.rl_sampling import draw_examples, strata_of

SPLIT = [{"label": "benign", "i": i} for i in range(90)] + [{"label": "malicious", "i": i} for i in range(10)]


def test_stratified_draws_balance_the_classes_of_a_skewed_split():
    strata = strata_of(SPLIT, "label", "rl")
    rng = random.Random(0)
    for n in (2, 8, 64):
        drawn = Counter(e["label"] for e in draw_examples(SPLIT, strata, rng, n))
        assert drawn == {"benign": n // 2, "malicious": n // 2}
    odd = Counter(e["label"] for e in draw_examples(SPLIT, strata, rng, 9))
    assert sorted(odd.values()) == [4, 5]
    uniform = Counter(e["label"] for e in draw_examples(SPLIT, None, random.Random(0), 400))
    assert uniform["benign"] > 300  # the split's own mix, for contrast


def test_stratified_draws_name_a_missing_field():
    with pytest.raises(ReasonRLError, match="training example 1 has no such field"):
        strata_of([{"label": "a"}, {"text": "b"}], "label", "rl")


def test_per_class_advantage_normalisation_gives_every_class_the_same_pull():
    import torch

    from reasonrl.plugins.engine.rl_update import balance_by_class

    # two groups of 2 per class: class a's advantages spread +-1, class b's +-4, class c's not at all
    advantages = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [4.0, 4.0], [-4.0, -4.0], [0.0, 0.0], [0.0, 0.0]])
    mask = torch.ones_like(advantages)
    out = balance_by_class(advantages, mask, ["a", "b", "c"], group_size=2)
    unit = 1 / torch.tensor([1.0, 1.0, -1.0, -1.0]).std()  # +-1 over four tokens, unbiased std
    assert torch.allclose(out[:4].abs(), unit.expand(4, 2))
    assert torch.allclose(out[:4].sign(), advantages[:4].sign())
    assert torch.equal(out[4:], advantages[4:])  # no spread: left as it is
    # padding does not count towards a class's spread
    padded = balance_by_class(torch.tensor([[2.0, 9.0], [-2.0, 9.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]),
                              ["a"], group_size=2)
    assert torch.allclose(padded[:, 0], torch.tensor([2.0, -2.0]) / torch.tensor([2.0, -2.0]).std())
