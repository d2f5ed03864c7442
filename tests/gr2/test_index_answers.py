"""Index answers: numbers instead of SIDs, partial lists, their decoding constraint, the
improvement reward, the evidence teacher and its filter, and the chance row."""

import itertools
import json
import math
import random

import pytest

from reasonrl.gr2_plugins.constraints import IndexConstraint, NumberList
from reasonrl.gr2_plugins.feature_teacher import FeatureRankerTeacher, FeatureTeacherParams
from reasonrl.gr2_plugins.filters import ImprovesInput
from reasonrl.gr2_plugins.metrics import chance_metrics, ndcg_at
from reasonrl.gr2_plugins.parsing import NOT_JSON, NOT_PERMUTATION, UNKNOWN_INDEX, parse_answer, parse_index_ranking
from reasonrl.gr2_plugins.prompts import index_teacher_prompt
from reasonrl.gr2_plugins.rewards import RankGainReward, RankGainParams
from reasonrl.plugins.engine.models import char_tokenizer
from reasonrl.testing import random_decode


def answer(numbers, explanation="x"):
    return json.dumps({"explanation": explanation, "recommendations": numbers})


def test_chance_is_the_mean_over_every_order():
    size = 5
    orders = list(itertools.permutations(range(size)))
    for k in (1, 3, 5):
        by_enumeration = sum(ndcg_at(order.index(0) + 1, k) for order in orders) / len(orders)
        assert chance_metrics(size, ks=(k,))[f"ndcg@{k}"] == pytest.approx(by_enumeration)
    ten = chance_metrics(10)
    assert ten["recall@5"] == 0.5 and ten["recall@1"] == 0.1
    assert ten["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 0.5 + 1 / math.log2(5) + 1 / math.log2(6)) / 10)
    assert ten["ndcg@5"] == pytest.approx(0.2948, abs=1e-4)


def test_a_partial_index_answer_keeps_the_rest_in_input_order():
    assert parse_index_ranking(answer([3, 1]), 5).order == [2, 0, 1, 3, 4]
    assert parse_index_ranking(answer(["[4]", "2"]), 5).order == [3, 1, 0, 2, 4]
    assert parse_index_ranking(answer([1, 2, 3, 4, 5]), 5).order == [0, 1, 2, 3, 4]
    assert parse_index_ranking(answer([6]), 5).error == UNKNOWN_INDEX
    assert parse_index_ranking(answer([0]), 5).error == UNKNOWN_INDEX
    assert parse_index_ranking(answer([True]), 5).error == UNKNOWN_INDEX
    assert parse_index_ranking(answer([2, 2]), 5).error == NOT_PERMUTATION
    assert parse_index_ranking(answer([]), 5).error == NOT_JSON
    assert parse_index_ranking("no answer", 5).error == NOT_JSON
    example = {"answer_format": "index", "candidates": ["a", "b", "c"]}
    assert parse_answer(answer([3]), example).order == [2, 0, 1]


def test_rank_gain_is_the_ndcg_improvement_over_the_input_order():
    example = {"answer_format": "index", "candidates": list("abcdefghij"), "target_index": 3}
    reward = RankGainReward(RankGainParams(k=10))
    copy, promote, demote, broken = reward(None, [answer([1, 2, 3]), answer([4]), answer([1, 2, 3, 5, 6, 7, 8]),
                                                  "oops"], [example] * 4)
    assert copy["rank_gain"] == 0.0
    assert promote["rank_gain"] == pytest.approx(1 - 1 / math.log2(5))
    assert demote["rank_gain"] == pytest.approx(1 / math.log2(9) - 1 / math.log2(5))  # target pushed from 4 to 8
    assert broken["rank_gain"] is None
    # at k = 5 a move from 8 to 6 earns nothing: both are outside the cut
    far = {**example, "target_index": 7}
    assert RankGainReward(RankGainParams(k=5))(None, [answer([8])], [far])[0]["rank_gain"] == pytest.approx(1.0)
    assert RankGainReward(RankGainParams(k=5))(None, [answer([1, 2, 3, 4, 5, 8])], [far])[0]["rank_gain"] == 0.0


def test_rank_gain_past_the_answer_pays_a_miss_for_listing_the_input_top():
    """Three-item answers that all miss the target: at k = 10 the one listing the input's top three
    keeps the target where it was, the one listing later candidates pushes it down, so a group's
    advantages pull the policy towards the input order whenever it is unsure. At k = 3 (the
    answer's length) every miss earns the same and only a hit is paid."""
    example = {"answer_format": "index", "candidates": list("abcdefghij"), "target_index": 5}
    misses = [answer([1, 2, 3]), answer([8, 9, 10])]
    at_10 = [r["rank_gain"] for r in RankGainReward(RankGainParams(k=10))(None, misses, [example] * 2)]
    assert at_10[0] == 0.0 and at_10[1] == pytest.approx(1 / math.log2(10) - 1 / math.log2(7))  # 6th -> 9th
    at_3 = [r["rank_gain"] for r in RankGainReward(RankGainParams(k=3))(None, misses + [answer([6])], [example] * 3)]
    assert at_3 == [0.0, 0.0, 1.0]


def test_improves_input_keeps_traces_that_move_the_target_up_or_keep_it_first():
    check = ImprovesInput().check
    example = {"answer_format": "index", "candidates": list("abcde"), "target_index": 2}
    assert check(example, answer([3])).accepted
    assert not check(example, answer([1, 2])).accepted  # the target stays third
    assert check(example, answer([2, 3])).accepted  # second
    assert check({**example, "target_index": 0}, answer([1])).accepted  # first, and kept first
    assert not check({**example, "target_index": 0}, answer([2])).accepted
    assert check(example, "nothing").reason == NOT_JSON


CANDIDATES = [{"sid": f"<|sid_begin|><s_a_{i}><|sid_end|>", "title": f"Film {i}", "year": "1990", "genres": ["Drama"]}
              for i in range(1, 6)]
EVIDENCE = [{"after_last": a, "near_recent": n, "recent_views": r, "views": 50}
            for a, n, r in ((0, 3, 1), (4, 2, 9), (0, 0, 0), (12, 7, 3), (1, 1, 1))]
SCORES = [-0.5, 0.8, -2.0, 1.5, 0.1]
HISTORY = [{"sid": "<|sid_begin|><s_a_9><|sid_end|>", "title": "Old Film", "year": "1980", "genres": ["Drama"]}]


def test_feature_ranker_follows_the_scores_and_cites_each_candidate_once():
    prompt = index_teacher_prompt(HISTORY, CANDIDATES, EVIDENCE, SCORES)
    example = {"answer_format": "index", "candidates": [c["sid"] for c in CANDIDATES], "target_index": 1}
    trace = FeatureRankerTeacher(FeatureTeacherParams(temperature=0.0, answer_items=3)).sample(prompt)
    parsed = parse_answer(trace, example)
    assert parsed.order[:3] == [3, 1, 4]  # scores 1.5, 0.8, 0.1
    assert "[4]: watched right after Old Film by 12 viewers." in trace
    reasoning = trace.split("{")[0]
    assert all(reasoning.count(f"[{n}]") <= 1 for n in range(1, 6))
    targeted = index_teacher_prompt(HISTORY, CANDIDATES, EVIDENCE, SCORES, target=CANDIDATES[2])
    assert parse_answer(FeatureRankerTeacher(FeatureTeacherParams(temperature=0.0)).sample(targeted),
                        example).order[0] == 2
    noisy = FeatureRankerTeacher(FeatureTeacherParams(temperature=2.0, seed=3))
    firsts = {parse_answer(t, example).order[0] for t in noisy.generate([prompt], 60)[0]}
    assert len(firsts) >= 3  # samples differ, so rejection sampling has something to choose from


def test_number_list_accepts_only_distinct_candidate_numbers():
    def reads(text, size=10, most=3):
        return NumberList(size, most).feed(text)

    assert reads("3, 10, 1]}") and reads("10]}") and reads("1")
    assert not reads("0") and not reads("11") and not reads("3, 3") and not reads("1, 2, 3, 4")
    assert not reads("]}") and not reads("2,3") and not reads("2]]")
    assert NumberList(5, 5).feed("1") and not NumberList(5, 5).feed("12")  # no 12 among 5 candidates


def test_index_constraint_decodes_only_parseable_answers():
    tok = char_tokenizer('abcdefghijklmnopqrstuvwxyz"{}[]:, 0123456789')
    example = {"answer_format": "index", "candidates": [f"c{i}" for i in range(12)], "target_index": 0}
    rng = random.Random(0)
    for trial in range(30):
        text, _ = random_decode(IndexConstraint(tok, size=12, max_items=3), tok, 90, rng)
        parsed = parse_answer(text, example)
        assert parsed.valid, (trial, text)
        assert len(json.loads(text[text.rindex("{"):])["recommendations"]) <= 3


@pytest.mark.slow
def test_rerank_answers_index_lists_exactly_as_the_evaluation_did(tmp_path):
    """A served index run rebuilds each test list's prompt (evidence included) and answer."""
    from reasonrl.core.config import resolve_config
    from reasonrl.core.pipeline import run_pipeline
    from reasonrl.gr2_plugins.inference import Reranker

    tiny = {"source": "tiny", "add_tokens": "prepare/sid_tokens.txt",
            "tiny": {"tokenizer_corpus": ["prepare/train.jsonl"], "vocab_size": 600, "hidden_size": 64,
                     "num_layers": 2, "intermediate_size": 128, "max_positions": 2048}}
    data = {"name": "jsonl", "params": {"files": {"train": "traces/sft.jsonl"}}}
    stages = [
        {"stage": "gr2_prepare", "id": "prepare", "history_items": 3, "answer_format": "index",
         "prompt_evidence": True, "evidence_hint": True, "max_users": {"train": 40, "validation": 4, "test": 6},
         "progress": False},
        {"stage": "teacher_traces", "id": "traces", "dataset": {"name": "jsonl", "params": {
            "files": {"train": "prepare/train.jsonl"}}}, "teacher": "feature_ranker",
         "filters": ["valid_format"], "max_rounds": 1, "samples_per_round": 1, "progress": False},
        {"stage": "sft", "id": "sft", "model": tiny, "dataset": data, "batch_size": 4, "epochs": 1, "progress": False},
        {"stage": "gr2_evaluate", "id": "evaluate", "bootstrap_samples": 20, "progress": False,
         "dataset": {"name": "jsonl", "params": {"files": {"test": "prepare/test.jsonl"}}},
         "constraint": {"name": "index_list", "params": {"max_items": 3, "close_at_budget": True}},
         "sampling": {"top_k": 1, "max_new_tokens": 40}, "variants": [{"name": "pre-ranker"}, {"name": "SFT", "stage": "sft"}]},
    ]
    config = resolve_config({"run_name": "index", "output_dir": str(tmp_path), "stages": stages})
    run_pipeline(config, echo=lambda m: None)
    run = tmp_path / "index"
    tests = [json.loads(line) for line in (run / "prepare" / "test.jsonl").read_text().splitlines()]
    evaluated = [json.loads(line) for line in (run / "evaluate" / "outputs_SFT.jsonl").read_text().splitlines()]
    reranker = Reranker.from_run(run, stage="sft")
    for example, row in zip(tests, evaluated):
        built = reranker.example(example["history"], example["candidate_ids"], example["until"])
        assert built["prompt"] == example["prompt"]
        result = reranker.rerank(example["history"], example["candidate_ids"], until=example["until"])
        assert result.text == row["output"]
        assert result.error is None and sorted(result.ranking) == sorted(example["candidate_ids"])
    # the report's co-watching shares, recounted from the answers' numbers and the hint's
    from reasonrl.gr2_plugins.prompts import hint_leaders

    rows = json.loads((run / "evaluate" / "report.json").read_text())["rows"]
    leaders = [hint_leaders(example["evidence"]) for example in tests]
    answers = [parse_answer(row["output"], example) for row, example in zip(evaluated, tests)]
    answers = [[i + 1 for i in a.order] if a.valid else [None] for a in answers]  # numbers, a partial list filled
    assert rows["SFT"]["co_watching_first_rate"] == pytest.approx(
        sum(a[0] == lead[0] for a, lead in zip(answers, leaders)) / len(tests))
    assert rows["SFT"]["co_watching_top3_rate"] == pytest.approx(
        sum(a[:3] == lead for a, lead in zip(answers, leaders)) / len(tests))
    assert rows["pre-ranker"]["co_watching_first_rate"] == pytest.approx(
        sum(lead[0] == 1 for lead in leaders) / len(tests))
    assert "Follows the co-watching rule" in (run / "evaluate" / "report.md").read_text()


def test_an_answer_key_outside_any_object_gets_a_proper_answer_in_evaluation_only():
    tok = char_tokenizer('abcdefghijklmnopqrstuvwxyz"{}[]:, 0123456789')
    written = 'the "recommendations'
    repaired = IndexConstraint(tok, size=5, max_items=2, close_at_budget=True)
    for token in tok(written, add_special_tokens=False)["input_ids"]:
        repaired.advance(token)
    text, _ = random_decode(repaired, tok, 60, random.Random(0))
    assert parse_answer(written + text, {"answer_format": "index", "candidates": list("abcde")}).valid
    rollout = IndexConstraint(tok, size=5, max_items=2, close_at_budget=False)
    for token in tok(written, add_special_tokens=False)["input_ids"]:
        rollout.advance(token)
    assert rollout.in_answer and rollout.allowed() is None  # no repair: the rollout is judged as written


def test_the_hint_ends_the_prompt_with_three_numbers_and_the_teacher_answers_with_them():
    from reasonrl.gr2_plugins.prompts import index_student_prompt

    prompt = index_student_prompt(HISTORY, CANDIDATES, EVIDENCE, summary=True, evidence_lines=False, hint=True)
    # counts 0, 4, 0, 12, 1 right after: [4], [2], [5]; the line is last, so the numbers end the prompt
    assert prompt.splitlines()[-1] == "Most watched right after your last film (12, 4, 1 viewers): 4, 2, 5"
    nothing = [{**e, "after_last": 0} for e in EVIDENCE]
    assert index_student_prompt(HISTORY, CANDIDATES, nothing, hint=True).endswith(
        "(0, 0, 0 viewers): 1, 2, 3")  # always three numbers (ties in input order): one shape
    teacher_prompt = index_teacher_prompt(HISTORY, CANDIDATES, EVIDENCE, SCORES, hint=True)
    trace = FeatureRankerTeacher(FeatureTeacherParams(order_by="co_watching")).sample(teacher_prompt)
    assert trace == answer([4, 2, 5], "Most watched right after your last film: 4, 2, 5")  # only the answer
    example = {"answer_format": "index", "candidates": [c["sid"] for c in CANDIDATES], "target_index": 1}
    assert parse_answer(trace, example).order == [3, 1, 4, 0, 2]
    without = FeatureRankerTeacher(FeatureTeacherParams(order_by="co_watching")).sample(
        index_teacher_prompt(HISTORY, CANDIDATES, EVIDENCE, SCORES, summary=True))
    assert without.startswith("Most watched right after your last film: [4] 12")  # no hint: the summary copy


def test_evidence_ranks_are_written_on_each_line_and_the_teacher_still_reads_them():
    from reasonrl.gr2_plugins.prompts import evidence_ranks

    ranks = evidence_ranks(EVIDENCE)
    assert [r["after_last"] for r in ranks] == [4, 2, 4, 1, 3]  # 12 > 4 > 1 > 0 = 0 (ties share)
    prompt = index_teacher_prompt(HISTORY, CANDIDATES, EVIDENCE, SCORES, ranked=True)
    assert "right after Old Film: 12 viewers (rank 1); near your recent films: 7 (rank 1)" in prompt
    trace = FeatureRankerTeacher(FeatureTeacherParams(temperature=0.0, answer_items=3)).sample(prompt)
    assert "[4]: watched right after Old Film by 12 viewers." in trace


def test_the_evidence_summary_names_each_kind_of_evidence_leaders_and_the_teacher_copies_it():
    from reasonrl.gr2_plugins.prompts import index_student_prompt

    prompt = index_student_prompt(HISTORY, CANDIDATES, EVIDENCE, summary=True)
    # counts 0, 4, 0, 12, 1 right after: [4] 12 first, zeros left out
    assert "Most watched right after your last film: [4] 12, [2] 4, [5] 1" in prompt
    assert "Most watched near your recent films: [4] 7, [1] 3, [2] 2" in prompt
    assert "Most viewed in the last 4 weeks: [2] 9, [4] 3, [1] 1" in prompt  # tie 1 = 1 = 1: input order
    teacher_prompt = index_teacher_prompt(HISTORY, CANDIDATES, EVIDENCE, SCORES, summary=True)
    trace = FeatureRankerTeacher(FeatureTeacherParams(order_by="co_watching", answer_items=2)).sample(teacher_prompt)
    reasoning, answer_text = trace.split("\n", 1)
    assert reasoning == "Most watched right after your last film: [4] 12, [2] 4"
    assert reasoning in prompt  # the student's reasoning is a copy of its own prompt's line
    example = {"answer_format": "index", "candidates": [c["sid"] for c in CANDIDATES], "target_index": 1}
    assert parse_answer(answer_text, example).order == [3, 1, 0, 2, 4]
    nothing = [{**e, "after_last": 0} for e in EVIDENCE]
    quiet = FeatureRankerTeacher(FeatureTeacherParams(order_by="co_watching")).sample(
        index_teacher_prompt(HISTORY, CANDIDATES, nothing, SCORES, summary=True))
    assert quiet.startswith("Most watched right after your last film: none\n")
    assert parse_answer(quiet, example).order == [0, 1, 2, 3, 4]  # nothing stands out: the input order stays


def test_ranking_behaviour_says_whether_an_answer_follows_the_co_watching_rule():
    from reasonrl.gr2_plugins.rewards import RankingBehaviour

    # after_last counts 0, 4, 0, 12, 1 -> the rule's top three are candidates 4, 2, 5
    example = {"answer_format": "index", "candidates": list("abcde"), "target_index": 1, "evidence": EVIDENCE}
    rule, first_only, other, broken = RankingBehaviour()(
        None, [answer([4, 2, 5]), answer([4, 5]), answer([2, 4, 5]), "oops"], [example] * 4)
    assert (rule["co_watching_first"], rule["co_watching_top3"]) == (1.0, 1.0)
    assert (first_only["co_watching_first"], first_only["co_watching_top3"]) == (1.0, 0.0)
    assert (other["co_watching_first"], other["co_watching_top3"]) == (0.0, 0.0)
    assert broken["co_watching_first"] is None and broken["co_watching_top3"] is None
    # without evidence the keys are absent, not zero
    plain = {key: value for key, value in example.items() if key != "evidence"}
    assert "co_watching_first" not in RankingBehaviour()(None, [answer([4, 2, 5])], [plain])[0]


def test_co_watching_copy_pays_only_the_rules_top_three_and_ignores_the_target():
    from reasonrl.gr2_plugins.rewards import CoWatchingCopyReward

    # the rule's top three are candidates 4, 2, 5 (after_last 12, 4, 1); the target (2) plays no part
    example = {"answer_format": "index", "candidates": list("abcde"), "target_index": 1, "evidence": EVIDENCE}
    elsewhere = {**example, "target_index": 4}
    texts = [answer([4, 2, 5]), answer([4, 5, 2]), answer([2]), "oops"]
    scores = [row["co_watching_copy"] for row in CoWatchingCopyReward()(None, texts, [example] * 4)]
    assert scores == [1.0, 0.0, 0.0, None]
    assert CoWatchingCopyReward()(None, texts[:1], [elsewhere])[0]["co_watching_copy"] == 1.0
    plain = {key: value for key, value in example.items() if key != "evidence"}
    with pytest.raises(ValueError, match="prompt_evidence"):
        CoWatchingCopyReward()(None, texts[:1], [plain])
