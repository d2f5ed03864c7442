import importlib
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("gr2_rule_margin")


def test_answers_keep_the_input_order_after_their_head(bench):
    assert bench.full_order([3, 3, 11, 1], 4) == [3, 1, 2, 4]  # repeats and out-of-range numbers dropped
    assert bench.full_order([], 3) == [1, 2, 3]


def test_policy_scores_by_hand(bench):
    # after_last counts 0, 5, 9, 1 -> the hint's leaders are candidates 3, 2, 4; the target is candidate 2
    row = {"evidence": [{"after_last": c} for c in (0, 5, 9, 1)], "candidate_ids": list("abcd"), "target_index": 1}
    scores = bench.policy_scores([row], k=3)
    second, third = 1 / math.log2(3), 0.5
    assert scores["input order"] == pytest.approx(second)                       # [1, 2, 3, 4]
    assert scores["rule's first"] == pytest.approx(third)                       # [3, 1, 2, 4]
    assert scores["rule's first two"] == pytest.approx(second)                  # [3, 2, 1, 4]
    assert scores["rule's top three (the teacher)"] == pytest.approx(second)    # [3, 2, 4, 1]
    assert scores["rule's first, input's first, rule's second"] == pytest.approx(third)  # [3, 1, 2, 4]
    assert scores["input's first, then the rule's first two"] == pytest.approx(third)    # [1, 3, 2, 4]
    assert bench.policy_scores([row], k=1)["rule's top three (the teacher)"] == 0.0


def test_answer_gains_under_the_target_and_a_posterior_by_hand(bench):
    # the row above: leaders 3, 2, 4; the target is candidate 2; the posterior splits between 2 and 3
    row = {"evidence": [{"after_last": c} for c in (0, 5, 9, 1)], "candidate_ids": list("abcd"), "target_index": 1}
    gains = bench.answer_gains(row, [0.0, 0.5, 0.5, 0.0], k=3)
    second = 1 / math.log2(3)
    # rule's first = [3, 1, 2, 4]: candidate 2 falls from 2nd to 3rd, candidate 3 rises from 3rd to 1st
    assert gains["rule's first"] == pytest.approx((0.5 - second, 0.5 * (0.5 - second) + 0.5 * 0.5))
    # top three = [3, 2, 4, 1]: candidate 2 stays 2nd, candidate 3 rises to 1st
    assert gains["rule's top three (the teacher)"] == pytest.approx((0.0, 0.25))
    assert gains["input order"] == (0.0, 0.0)


def test_margin_stats_and_softmax(bench):
    assert bench.margin_stats([0.1, 0.3]) == "+0.2000 | 0.1000 | 1"   # (2 x 0.1 / 0.2)^2
    assert bench.margin_stats([-0.1, 0.1]).endswith("| never")
    assert bench.softmax([0.0, math.log(3.0)]) == pytest.approx([0.25, 0.75])


def test_evidence_model_round_trips_through_its_description():
    import json

    from reasonrl.gr2_plugins.prepare import EvidenceModel

    model = EvidenceModel([1.0, 2.0], [2.0, 0.5], [0.3, -1.2], 0.25)
    restored = EvidenceModel.from_description(json.loads(json.dumps(model.describe())))
    # (x - mean) / scale . weights + bias, by hand for x = (3, 1): (1, -2) . (0.3, -1.2) + 0.25 = 2.95
    assert restored.scores([[3.0, 1.0]]) == pytest.approx([2.95])


def test_number_tokens_point_at_the_six_numbers(bench):
    from reasonrl.gr2_plugins.feature_teacher import FeatureRankerTeacher
    from reasonrl.plugins.engine.models import bpe_tokenizer

    completion = FeatureRankerTeacher.copy_hint("4, 10, 3")
    tokenizer = bpe_tokenizer([completion, "numbers 1, 2, 3, 10"] * 4, vocab_size=300)
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    cited = [tokenizer.decode([ids[i]]).strip(" [") for i in bench.number_tokens(tokenizer, completion)]
    assert cited == ["4", "10", "3", "4", "10", "3"]  # three in the explanation, three in the list


def test_chance_and_the_rollout_reward_spread(bench, tmp_path):
    rows = [{"candidate_ids": list("abcdefghij")}, {"candidate_ids": list("abcd")}]
    ten, four = (1 + 1 / math.log2(3) + 0.5) / 10, (1 + 1 / math.log2(3) + 0.5) / 4  # NDCG@3 of a random order
    assert bench.chance_score(rows, 3) == pytest.approx((ten + four) / 2)
    (tmp_path / "rl").mkdir()
    (tmp_path / "rl" / "history.json").write_text('[{"reward/std": 0.4}, {"reward/std": 0.5}, {"loss": 1.0}]')
    assert bench.reward_spread(tmp_path, "rl") == "0.450"
    assert bench.reward_spread(tmp_path, "sft") == "-"  # no RL history


def test_teacher_gap_scores_each_evaluated_row_against_the_rule_by_hand(bench, tmp_path):
    import json

    # after_last 0, 5, 9, 1 -> the rule's top three are candidates 3, 2, 4 (then 1)
    evidence = [{"after_last": c} for c in (0, 5, 9, 1)]
    base = {"evidence": evidence, "candidate_ids": list("abcd"), "candidates": list("abcd"), "answer_format": "index"}
    rows = [{**base, "user": "u1", "target_index": 1}, {**base, "user": "u2", "target_index": 0},
            {**base, "user": "u3", "target_index": 2}]  # a third test list the evaluation did not score
    (tmp_path / "prepare").mkdir()
    (tmp_path / "evaluate").mkdir()
    (tmp_path / "prepare" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    second, fourth = 1 / math.log2(3), 1 / math.log2(5)
    report = {"rows": {"pre-ranker": {"ndcg@5_per_list": [second, 1.0]},  # input order: target 2nd, then 1st
                       "SFT (hint)": {"ndcg@5_per_list": [1.0, 0.0]},    # target first; an answer that failed
                       "chance (exact expectation)": {"ndcg@5": 0.3}}}
    (tmp_path / "evaluate" / "report.json").write_text(json.dumps(report))
    table = bench.teacher_gap_table(tmp_path).splitlines()
    assert len(table) == 4  # the chance row has no lists and no row
    rule_u1, rule_u2 = second, fourth  # the target 2nd, then 4th in [3, 2, 4, 1]
    pre = [c.strip() for c in table[2].split("|")[1:-1]]
    assert pre[:4] == ["pre-ranker", "2", f"{(second + 1) / 2:.4f}", f"{(rule_u1 + rule_u2) / 2:.4f}"]
    assert pre[4].startswith(f"{(rule_u2 - 1) / 2:+.4f} [") and pre[5] == "0.50"
    cells = [c.strip() for c in table[3].split("|")[1:-1]]
    assert cells[:4] == ["SFT (hint)", "2", "0.5000", f"{(rule_u1 + rule_u2) / 2:.4f}"]
    assert cells[4].startswith(f"{((rule_u1 - 1) + rule_u2) / 2:+.4f} [")
    assert cells[5] == "1.00"
