import pytest

from reasonrl.plugins.rewards import JsonFormatParams, LengthPenaltyParams, OverlongParams, RegexFormatParams, WeightedSumParams
from reasonrl.plugins.rewards import (
    JsonFormat,
    LengthPenalty,
    Overlong,
    RegexFormat,
    RewardError,
    WeightedSum,
    extract_json_object,
    overlong_penalty,
    score_samples,
)
from reasonrl.plugins.data.tasks import SortAccuracy, SortDigits, SortDigitsParams


def test_overlong_shaping_by_hand():
    # L_max = 100, L_cache = 20: free up to 80, linear to -1 at 100, -1 beyond
    assert [overlong_penalty(n, 100, 20) for n in (80, 81, 90, 100, 101)] == [0.0, -0.05, -0.5, -1.0, -1.0]
    reward = Overlong(OverlongParams(max_length=4, cache_length=2, unit="words"))
    assert reward([""] * 2, ["a b c", "a b c d e"], [{}, {}]) == [{"overlong": -0.5}, {"overlong": -1.0}]


def test_length_penalty_by_hand():
    reward = LengthPenalty(LengthPenaltyParams(min_length=4, max_length=8, penalty=1.0))
    texts = ["a", "a b c d", "a b c d e f g h i j"]
    assert [r["length"] for r in reward([""] * 3, texts, [{}] * 3)] == [-0.75, 0.0, -0.25]


def test_regex_and_json_format():
    regex = RegexFormat(RegexFormatParams(pattern=r"<think>.+</think>\s*\d"))
    assert regex([""] * 2, ["<think>x\ny</think> 3", "3"], [{}] * 2) == [{"format": 1.0}, {"format": 0.0}]
    js = JsonFormat(JsonFormatParams(required_keys=["label"]))
    texts = ['```json\n{"label": "spam", "note": "a {b}"}\n```', '{"other": 1}', "not json"]
    assert [r["format"] for r in js([""] * 3, texts, [{}] * 3)] == [1.0, 0.0, 0.0]
    assert extract_json_object('x {bad} y {"a": "}"}') == {"a": "}"}
    schema = {"type": "object", "properties": {"p": {"type": "number", "minimum": 0, "maximum": 1}}, "required": ["p"]}
    strict = JsonFormat(JsonFormatParams(json_schema=schema))
    assert [r["format"] for r in strict([""] * 3, ['{"p": 0.3}', '{"p": 3}', '{"q": 1}'], [{}] * 3)] == [1.0, 0.0, 0.0]


def test_weighted_sum_skips_components_that_do_not_apply():
    combiner = WeightedSum(WeightedSumParams(weights={"rank": 1.0, "format": 0.2}, default_weight=0.0))
    assert combiner.combine({"rank": 0.3, "format": 1.0, "other": 5.0, "judge": None}) == pytest.approx(0.5)


def boom(prompts, completions, examples):
    return [1 / 0 if c == "bad" else {"x": 1.0} for c in completions]


def test_reward_error_names_function_and_sample_or_scores_invalid():
    combiner = WeightedSum(WeightedSumParams())
    with pytest.raises(RewardError, match="reward function 'boom' raised on sample 1"):
        score_samples([("boom", boom)], combiner, ["", ""], ["ok", "bad"], [{}, {}])
    scalars, parts = score_samples([("boom", boom)], combiner, ["", ""], ["ok", "bad"], [{}, {}],
                                   on_error="invalid", invalid_reward=-1.0)
    assert scalars == [1.0, -1.0] and parts == [{"x": 1.0, "invalid": 0.0}, {"invalid": 1.0}]


def test_sort_task_and_reward():
    splits = SortDigits(SortDigitsParams(length=3, train_size=5, validation_size=2, test_size=0)).splits()
    example = splits["train"][0]
    digits = example["prompt"][:-1]
    assert example["answer"] == "".join(sorted(digits)) and len(splits["validation"]) == 2
    reward = SortAccuracy()
    assert reward([""] * 3, ["127", "12", "1278"], [{"answer": "127"}] * 3) == [
        {"sort_accuracy": 1.0}, {"sort_accuracy": pytest.approx(2 / 3)}, {"sort_accuracy": 0.75}]
