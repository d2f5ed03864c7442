import json
import math

import pytest

from reasonrl.gr2_plugins.metrics import (
    bootstrap_interval,
    identity_copy_rate,
    ndcg_at,
    paired_bootstrap,
    ranking_metrics,
)
from reasonrl.gr2_plugins.parsing import MISSING_ITEMS, NOT_JSON, NOT_PERMUTATION, UNKNOWN_SID, parse_ranking
from reasonrl.gr2_plugins.rewards import (
    AUCReward,
    ConditionalRank,
    ConditionalRankParams,
    FormatReward,
    NDCGReward,
    RankReward,
    TopKParams,
    TopKReward,
)

CANDIDATES = [f"<|sid_begin|><s_a_{i}><s_b_0><|sid_end|>" for i in range(10)]


def answer(order, explanation="because"):
    return json.dumps({"explanation": explanation, "recommendations": [CANDIDATES[i] for i in order]})


def example(target_index):
    return {"candidates": CANDIDATES, "target_index": target_index}


def test_parser_classifies_failures():
    assert parse_ranking(answer(range(10)), CANDIDATES).order == list(range(10))
    spaced = answer([9, 8, 7, 6, 5, 4, 3, 2, 1, 0]).replace("><", "> <")
    assert parse_ranking("Reasoning...\n```json\n" + spaced + "\n```", CANDIDATES).order[0] == 9
    assert parse_ranking("no json here", CANDIDATES).error == NOT_JSON
    assert parse_ranking('{"explanation": "x"}', CANDIDATES).error == NOT_JSON
    bad = json.dumps({"recommendations": CANDIDATES[:9] + ["<|sid_begin|><s_a_99><|sid_end|>"]})
    assert parse_ranking(bad, CANDIDATES).error == UNKNOWN_SID
    assert parse_ranking(answer([0, 0, 1, 2, 3, 4, 5, 6, 7, 8]), CANDIDATES).error == NOT_PERMUTATION
    assert parse_ranking(answer([0, 1, 2]), CANDIDATES).error == MISSING_ITEMS


def test_rank_reward_by_hand():
    # target at input position 4 (index 3) promoted to 1 with |D| = 10: +0.3
    order = [3, 0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert RankReward()([""], [answer(order)], [example(3)]) == [{"rank": pytest.approx(0.3), "kept_first": 0.0}]
    # demoted from 1 to 10: -0.9 ; kept first: 0 and kept_first 1
    assert RankReward()([""], [answer([1, 2, 3, 4, 5, 6, 7, 8, 9, 0])], [example(0)])[0]["rank"] == pytest.approx(-0.9)
    assert RankReward()([""], [answer(range(10))], [example(0)]) == [{"rank": 0.0, "kept_first": 1.0}]
    assert RankReward()([""], ["garbage"], [example(0)]) == [{"rank": None, "kept_first": None}]


def test_auc_ndcg_topk_format_by_hand():
    order = [3, 0, 1, 2, 4, 5, 6, 7, 8, 9]  # target index 0 lands at output position 2
    assert AUCReward()([""], [answer(order)], [example(0)])[0]["auc"] == pytest.approx(8 / 9)
    assert NDCGReward()([""], [answer(order)], [example(0)])[0]["ndcg"] == pytest.approx(1 / math.log2(3))
    assert TopKReward(TopKParams(k=1))([""], [answer(order)], [example(0)])[0]["topk"] == 0.0
    assert TopKReward(TopKParams(k=3))([""], [answer(order)], [example(0)])[0]["topk"] == 1.0
    assert FormatReward()([""] * 2, [answer(order), "x"], [example(0)] * 2) == [{"format": 1.0}, {"format": 0.0}]


def test_conditional_reward_rules():
    combine = ConditionalRank(ConditionalRankParams(alpha=0.2)).combine
    assert combine({"rank": 0.3, "format": 1.0, "kept_first": 0.0}) == pytest.approx(0.5)  # moved up: bonus
    assert combine({"rank": 0.0, "format": 1.0, "kept_first": 0.0}) == 0.0  # copied the input: no bonus
    assert combine({"rank": -0.2, "format": 1.0, "kept_first": 0.0}) == pytest.approx(-0.2)
    assert combine({"rank": 0.0, "format": 1.0, "kept_first": 1.0}) == pytest.approx(0.2)  # already first, kept
    strict = ConditionalRank(ConditionalRankParams(alpha=0.2, count_kept_first=False)).combine
    assert strict({"rank": 0.0, "format": 1.0, "kept_first": 1.0}) == 0.0
    assert combine({"rank": None, "format": 0.0, "kept_first": None}) == -1.0


def test_naive_reward_rewards_copying_the_input(reasonrl_registry):
    """The reward-hacking setup: weighted_sum pays the format bonus for an unchanged list."""
    naive = reasonrl_registry.build("reward_combiners", "weighted_sum",
                                    {"weights": {"rank": 1.0, "format": 0.2, "kept_first": 0.0}, "required": ["rank"]})
    assert naive.combine({"rank": 0.0, "format": 1.0, "kept_first": 0.0}) == pytest.approx(0.2)
    assert naive.combine({"rank": None, "format": 0.0, "kept_first": None}) == -1.0


def test_ranking_metrics_by_hand():
    rankings = [["a", "b", "c"], ["b", "a", "c"], None]  # ranks 1, 2 and an unparseable output
    metrics = ranking_metrics(rankings, ["a", "a", "a"], ks=(1, 3))
    assert metrics["recall@1"] == pytest.approx(1 / 3) and metrics["recall@3"] == pytest.approx(2 / 3)
    assert metrics["ndcg@3"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert ndcg_at(4, 3) == 0.0 and ndcg_at(1, 1) == 1.0


def test_bootstrap_and_identity_copy():
    lo, hi = bootstrap_interval([0.0, 1.0] * 50, samples=500)
    assert lo < 0.5 < hi and hi - lo < 0.3
    assert bootstrap_interval([1.0] * 10) == (1.0, 1.0)
    assert identity_copy_rate([[1, 2], [2, 1], None], [[1, 2], [1, 2], [1, 2]]) == 0.5


def test_ranking_metric_is_registered(reasonrl_registry):
    metric = reasonrl_registry.build("metrics", "ranking")
    assert metric([["a", "b"], ["b", "a"]], ["a", "a"])["recall@1"] == 0.5


def test_paired_bootstrap_of_differences():
    # differences [1, 1, 1, 0]: mean 0.75; a resample's mean is a multiple of 1/4 in [0, 1]
    result = paired_bootstrap([0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], samples=400)
    assert result["difference"] == 0.75 and result["lists"] == 4
    lo, hi = result["ci95"]
    assert 0.25 <= lo <= 0.75 <= hi <= 1.0 and result["share_at_or_below_zero"] < 0.05
    # list difficulty cancels: the same shift on every list has a zero-width interval
    shifted = paired_bootstrap([0.1, 0.9, 0.3], [0.2, 1.0, 0.4], samples=200)
    assert shifted["ci95"] == pytest.approx((0.1, 0.1)) and shifted["share_at_or_below_zero"] == 0.0
    same = paired_bootstrap([0.5, 0.2], [0.5, 0.2], samples=100)
    assert same["difference"] == 0.0 and same["ci95"] == (0.0, 0.0) and same["share_at_or_below_zero"] == 1.0
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([1.0], [1.0, 0.0])
    # within strata: seed "a" always gains 1, seed "b" always 0, so every resample's mean is exactly 0.5
    strata = paired_bootstrap([0.0] * 4, [1.0, 1.0, 0.0, 0.0], samples=100, strata=["a", "a", "b", "b"])
    assert strata["ci95"] == (0.5, 0.5)
    assert paired_bootstrap([0.0] * 4, [1.0, 1.0, 0.0, 0.0], samples=100)["ci95"] != (0.5, 0.5)


def test_comparisons_must_name_variants():
    from pydantic import ValidationError

    from reasonrl.gr2_plugins.evaluate import GR2EvaluateParams

    variants = [{"name": "pre-ranker"}, {"name": "RL", "stage": "rl"}]
    dataset = {"name": "jsonl", "params": {"files": {"test": "t.jsonl"}}}
    GR2EvaluateParams(dataset=dataset, variants=variants, comparisons=[["pre-ranker", "RL"]])
    with pytest.raises(ValidationError, match="'SFT'.*not a variant name"):
        GR2EvaluateParams(dataset=dataset, variants=variants, comparisons=[["SFT", "RL"]])


def test_a_stray_quote_in_the_reasoning_does_not_hide_the_answer():
    from reasonrl.gr2_plugins.parsing import parse_ranking

    text = 'a set {} first, then ' + answer([1, 0] + list(range(2, 10)))  # the scan finds {} first
    assert parse_ranking(text, CANDIDATES).order[:2] == [1, 0]
