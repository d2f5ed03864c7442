"""Stratified prompt draws: every class equally often per step, whatever the split's mix."""

import random
from collections import Counter

import pytest

from reasonrl.core.errors import ReasonRLError
from reasonrl.plugins.rl import draw_examples, strata_of

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
