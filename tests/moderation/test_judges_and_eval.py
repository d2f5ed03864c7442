import json
import math

import pytest

from reasonrl.moderation_plugins.evaluate import aggregate_samples, reliability_bins, score_verdicts
from reasonrl.moderation_plugins.judges import OpenAICompatibleJudge, OpenAIJudgeParams, p_yes_from_reply, yes_share
from reasonrl.moderation_plugins.rewards import RubricJudge, RubricJudgeParams, judge_prompt
from reasonrl.testing import JsonHandler, serve_loopback

LABELS = ["ham", "spam"]
EX = {"content": "WIN A PRIZE now, send your bank details", "label": "spam", "labels": LABELS, "task": "spam_email"}


def test_yes_share_renormalises_over_answer_tokens():
    assert yes_share([math.log(0.3)], [math.log(0.1)]) == pytest.approx(0.75)
    assert yes_share([math.log(0.2), math.log(0.1)], [math.log(0.3)]) == pytest.approx(0.5)
    assert yes_share([], []) == 0.5


def test_p_yes_from_an_endpoint_reply_with_and_without_logprobs():
    top = [{"token": "Yes", "logprob": math.log(0.6)}, {"token": "No", "logprob": math.log(0.2)},
           {"token": "Maybe", "logprob": math.log(0.2)}]
    reply = {"choices": [{"message": {"content": "Yes"}, "logprobs": {"content": [{"top_logprobs": top}]}}]}
    assert p_yes_from_reply(reply) == pytest.approx(0.75)
    assert p_yes_from_reply({"choices": [{"message": {"content": "No, it is not."}}]}) == 0.0
    assert p_yes_from_reply({"choices": [{"message": {"content": "unclear"}}]}) == 0.5


class FakeJudge:
    def __init__(self):
        self.prompts = []

    def probability_yes(self, prompts):
        self.prompts += prompts
        return [0.9 if "cites the policy" in p else 0.3 for p in prompts]


def test_rubric_reward_is_the_mean_p_yes_over_criteria_and_zero_without_reasoning():
    judge = FakeJudge()
    reward = RubricJudge(RubricJudgeParams(criteria=["Q1?", "Q2?"], include_policy=False), judge=judge)
    good = "It cites the policy: bank details requests are phishing.\nLabel: spam\nProbability: 0.9"
    plain = "Bulk offer.\nLabel: spam\nProbability: 0.8"
    out = reward(["p"] * 3, [good, plain, "Label: spam"], [EX] * 3)
    assert [r["rubric"] for r in out] == pytest.approx([0.9, 0.3, 0.0])
    assert len(judge.prompts) == 4  # two criteria x two completions with reasoning
    assert "Moderator's label: spam" in judge.prompts[0] and "Question: Q1?" in judge.prompts[0]
    with_policy = judge_prompt("Q?", EX, "r", "spam", "POLICY TEXT", 10)
    assert "POLICY TEXT" in with_policy and "WIN A PRIZ\n" in with_policy  # content cut to 10 chars


def test_hf_judge_matches_a_direct_next_token_computation():
    import torch

    from reasonrl.moderation_plugins.judges import HFJudge, HFJudgeParams
    from reasonrl.plugins.engine.models import ModelSpec, TinyModelParams

    spec = ModelSpec(source="tiny", tiny=TinyModelParams(alphabet="yesnoYESNO ab?"))
    judge = HFJudge(HFJudgeParams(model=spec, chat_template=False, batch_size=2))
    prompts = ["ab? ", "a? ", "bbb? "]
    scores = judge.probability_yes(prompts)
    model, tok = judge.model.get()
    ids = torch.tensor([tok("a? ", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0, -1].log_softmax(-1)
    # a character tokenizer: every yes/no word starts with y/Y/n/N
    yes = [float(logp[tok.convert_tokens_to_ids(c)]) for c in sorted({"y", "Y"})]
    no = [float(logp[tok.convert_tokens_to_ids(c)]) for c in sorted({"n", "N"})]
    assert scores[1] == pytest.approx(yes_share(yes, no), abs=1e-4)
    assert all(0 < s < 1 for s in scores)


class FakeEndpoint(JsonHandler):
    bodies = []

    def do_POST(self):  # noqa: N802
        FakeEndpoint.bodies.append(self.read_json())
        top = [{"token": "yes", "logprob": math.log(0.4)}, {"token": "no", "logprob": math.log(0.1)}]
        self.send_json({"choices": [{"message": {"content": "yes"}, "logprobs": {"content": [{"top_logprobs": top}]}}]})


def test_openai_judge_asks_for_one_token_with_logprobs_and_caches(tmp_path):
    with serve_loopback(FakeEndpoint) as url:
        params = OpenAIJudgeParams(base_url=url, model="judge", api_key_env=None, cache_dir=str(tmp_path))
        judge = OpenAICompatibleJudge(params)
        assert judge.probability_yes(["q1", "q2"]) == pytest.approx([0.8, 0.8])
        assert judge.probability_yes(["q1"]) == pytest.approx([0.8])
    assert len(FakeEndpoint.bodies) == 2  # the repeat came from the disk cache
    body = FakeEndpoint.bodies[0]
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["temperature"] == 0.0


def test_monte_carlo_aggregation_by_hand():
    samples = ["Prize scam.\nLabel: spam\nProbability: 0.9", "Odd.\nLabel: spam", "Fine.\nLabel: ham\nProbability: 0.2",
               "no verdict at all"]
    out = aggregate_samples(samples, LABELS)
    # probabilities 0.9, 1.0 (spam without one), 0.2, 0.5 (unparsed) -> mean 0.65; votes spam 2, ham 1
    assert out["label"] == "spam" and out["p_positive"] == pytest.approx(0.65)
    assert out["failures"] == pytest.approx(0.5) and out["reasoning_words"] == pytest.approx((2 + 1 + 1 + 4) / 4)
    # one trace of four reached the token budget: the report shows it, so a cut answer is not read as a choice
    assert aggregate_samples(samples, LABELS, [False, True, False, False])["cut"] == 0.25
    assert aggregate_samples(samples, LABELS)["cut"] == 0.0


def test_scores_and_reliability_bins_by_hand():
    examples = [{"label": g, "labels": LABELS} for g in ["spam", "ham", "spam", "ham"]]
    verdicts = [{"label": "spam", "p_positive": 0.95, "failures": 0, "reasoning_words": 10},
                {"label": "spam", "p_positive": 0.65, "failures": 0, "reasoning_words": 20},
                {"label": "ham", "p_positive": 0.3, "failures": 0, "reasoning_words": 30},
                {"label": None, "p_positive": 0.5, "failures": 1, "reasoning_words": 0}]
    report = score_verdicts(examples, verdicts)
    assert report["accuracy"] == 0.25 and report["parse_failure_rate"] == 0.25 and report["reasoning_words"] == 15
    # positives score 0.95, 0.3; negatives 0.65, 0.5: 0.95 beats both, 0.3 beats none -> AUC 0.5
    assert report["roc_auc"] == pytest.approx(0.5)
    # confidences 0.95 (right), 0.65 (wrong), 0.7 (wrong), 0.5 (None counts as not positive -> 1 - 0.5, wrong)
    assert report["ece"] == pytest.approx((0.05 + 0.65 + 0.7 + 0.5) / 4)
    bins = reliability_bins([0.95, 0.65, 0.7, 0.5], [True, False, False, False])
    assert [(b["lo"], b["n"], b["accuracy"]) for b in bins] == [(0.4, 1, 0.0), (0.6, 2, 0.0), (0.9, 1, 1.0)]


def test_task_examples_carry_prompt_sft_target_and_policy(tmp_path):
    from reasonrl.core.errors import ReasonRLError
    from reasonrl.moderation_plugins.data import ModerationDataParams, PromptInjection

    rows = [{"id": str(i), "text": f"input {i}", "label": "malicious" if i % 3 else "benign"} for i in range(30)]
    (tmp_path / "injections.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    splits = PromptInjection(ModerationDataParams(path=str(tmp_path), max_train=5, reflect=True)).splits()
    example = splits["train"][0]
    assert len(splits["train"]) == 5 and example["policy"] == "prompt_injection"
    assert example["content"] in example["prompt"] and "reflect" in example["prompt"]
    assert example["completion"].endswith(f"Label: {example['label']}\nProbability: "
                                          f"{0.9 if example['label'] == 'malicious' else 0.1}")
    policy = tmp_path / "mine.md"
    policy.write_text("---\nlabels: [ok, bad]\n---\nMy rules.")
    with pytest.raises(ReasonRLError, match="needs \\['benign', 'malicious'\\]"):
        PromptInjection(ModerationDataParams(path=str(tmp_path), policy=str(policy))).splits()


def test_rubric_reward_builds_its_judge_from_the_registry_and_reads_the_task_policy():
    tiny = {"source": "tiny", "tiny": {"alphabet": "abcdefghijklmnopqrstuvwxyz ?:.,\n", "max_positions": 4096}}
    params = RubricJudgeParams(judge={"name": "hf", "params": {"model": tiny, "chat_template": False}},
                               criteria=["Is it grounded?"])
    reward = RubricJudge(params)
    good = "Asks for bank details.\nLabel: spam\nProbability: 0.9"
    out = reward(["p", "p"], [good, "Label: spam"], [EX, EX])
    assert 0.0 < out[0]["rubric"] < 1.0 and out[1]["rubric"] == 0.0
    assert type(reward.judge()).__name__ == "HFJudge"


def test_the_report_counts_each_rows_answers_per_label():
    from reasonrl.moderation_plugins.evaluate import answer_counts

    rows = {"RL": {"predictions": ["benign", "malicious", "benign", None]}, "floor": {"predictions": None}}
    assert answer_counts(rows) == "\n\nAnswers per label:\n- RL: benign 2, malicious 1, none 1"


def test_the_report_states_the_majority_label_floor():
    from reasonrl.moderation_plugins.evaluate import majority_line

    examples = [{"label": "a", "labels": ["a", "b"]}] * 3 + [{"label": "b", "labels": ["a", "b"]}]
    # always a: F1(a) = 2 x 3 / (3 + 4) = 6/7, F1(b) = 0; macro 3/7
    assert majority_line(examples) == f"\n\nMajority label (always a): macro-F1 {3 / 7:.4f}, accuracy 0.7500"
