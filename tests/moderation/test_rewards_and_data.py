import pytest

from reasonrl.core.errors import ReasonRLError
from reasonrl.moderation_plugins.data import clip, stratified_splits
from reasonrl.moderation_plugins.rewards import LabelAccuracy, ReasoningLength, ReasoningLengthParams, VerdictFormat

EX = {"label": "spam", "labels": ["ham", "spam"]}


def test_moderation_rewards_by_hand():
    good = "It offers a prize for a fee, a classic scam pattern.\nLabel: spam\nProbability: 0.9"
    wrong = "Looks personal.\nLabel: ham\nProbability: 0.2"
    bare = "Label: spam"
    assert [r["label_accuracy"] for r in LabelAccuracy()([""] * 3, [good, wrong, bare], [EX] * 3)] == [1.0, 0.0, 1.0]
    assert [r["format"] for r in VerdictFormat()([""] * 3, [good, wrong, bare], [EX] * 3)] == [1.0, 1.0, 0.0]
    length = ReasoningLength(ReasoningLengthParams(min_words=10, max_words=20))
    # good has 11 reasoning words, wrong 2 (-0.8), bare 0 (-1)
    assert [r["length"] for r in length([""] * 3, [good, wrong, bare], [EX] * 3)] == [0.0, -0.8, -1.0]


def test_stratified_splits_keep_label_shares_and_are_seeded():
    rows = [{"id": i, "label": "a" if i < 80 else "b"} for i in range(100)]
    splits = stratified_splits([dict(r) for r in rows], validation=0.1, test=0.2, seed=3)
    assert sum(r["label"] == "b" for r in splits["test"]) == 4 and len(splits["test"]) == 20
    assert len(splits["validation"]) == 10 and len(splits["train"]) == 70
    again = stratified_splits([dict(r) for r in rows], validation=0.1, test=0.2, seed=3)
    assert [r["id"] for r in again["test"]] == [r["id"] for r in splits["test"]]


def test_clip_keeps_head_and_tail():
    text = "a" * 500 + "z" * 500
    clipped = clip(text, 300, tail=100)
    assert len(clipped) < 300 and clipped.startswith("a" * 100) and clipped.endswith("z" * 100)
    assert "[... cut ...]" in clipped and clip("short", 300) == "short"


@pytest.mark.slow
@pytest.mark.parametrize("task,size,labels", [
    ("prompt_injection", 181, {"malicious": 118, "benign": 63}),
    ("risk_area", 939, None),
    ("harmful_response", 984, {"violating": 533, "safe": 451}),
    ("spam_email", 6046, {"ham": 4150, "spam": 1896}),
])
def test_real_tasks_load_with_their_documented_sizes(task, size, labels, reasonrl_registry):
    splits = reasonrl_registry.build("datasets", task).splits()
    rows = [r for split in splits.values() for r in split]
    assert len(rows) == size and {r["task"] for r in rows} == {task}
    if labels:
        assert {label: sum(r["label"] == label for r in rows) for label in labels} == labels
    assert not {r["id"] for r in splits["test"]} & {r["id"] for r in splits["train"]}
    assert max(len(r["content"]) for r in rows) <= 1200


def test_policies_are_versioned_and_replaceable(tmp_path):
    from reasonrl.core.errors import ReasonRLError
    from reasonrl.moderation_plugins.prompts import classifier_prompt, load_policy_document

    for task in ("spam_email", "harmful_response", "risk_area", "prompt_injection"):
        meta, text = load_policy_document(task)
        assert meta["policy"] == task and meta["version"] == 1 and len(meta["labels"]) >= 2 and text
    own = tmp_path / "mine.md"
    own.write_text("---\nversion: 7\nlabels: [ok, bad]\n---\nNo shouting.")
    assert load_policy_document(str(own)) == ({"version": 7, "labels": ["ok", "bad"]}, "No shouting.")
    with pytest.raises(ReasonRLError, match="neither a policy file"):
        load_policy_document("nonexistent_task")
    prompt = classifier_prompt("No shouting.", "HELLO", ["ok", "bad"], reflect=True)
    assert "No shouting." in prompt and "HELLO" in prompt and "reflect" in prompt and "'Label: <one of ok, bad>'" in prompt


def test_tfidf_baseline_learns_a_keyword_rule(tmp_path, reasonrl_registry):
    import json

    from reasonrl.core.config import resolve_config
    from reasonrl.core.pipeline import run_pipeline

    rows = []
    for i in range(60):
        bad = i % 2 == 0
        rows.append({"content": f"{'free money now' if bad else 'meeting notes'} item {i}",
                     "label": "spam" if bad else "ham", "labels": ["ham", "spam"]})
    for split, part in (("train", rows[:40]), ("test", rows[40:])):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    files = {s: str(tmp_path / f"{s}.jsonl") for s in ("train", "test")}
    stage = {"stage": "tfidf_baseline", "id": "b", "dataset": {"name": "jsonl", "params": {"files": files}}}
    summary = run_pipeline(resolve_config({"run_name": "b", "output_dir": str(tmp_path), "stages": [stage]}),
                           echo=lambda m: None)["b"]
    assert summary["test/accuracy"] == 1.0 and summary["test/roc_auc"] == 1.0 and summary["train_examples"] == 40


def test_verdict_labels_metric_counts_each_answer_once():
    from reasonrl.moderation_plugins.rewards import VerdictLabels
    from reasonrl.plugins.engine.rl_sampling import mean_components

    answers = ["Label: spam", "Label: spam", "Label: ham", "no verdict here"]
    rows = VerdictLabels()([""] * 4, answers, [EX] * 4)
    assert all(sum(row.values()) == 1.0 for row in rows)
    shares = mean_components(rows, "metric/")
    assert shares == {"metric/label=spam": 0.5, "metric/label=ham": 0.25, "metric/label=none": 0.25}


def test_verdict_labels_entropy_by_hand_and_a_constant_start_stops_the_run():
    from reasonrl.moderation_plugins.rewards import VerdictLabels, VerdictLabelsParams

    # shares 1/2, 1/4, 1/4: H = 0.5*1 + 0.25*2 + 0.25*2 = 1.5 bits
    means = {"label=spam": 0.5, "label=ham": 0.25, "label=none": 0.25}
    assert VerdictLabels().summarize(means, step=1)["label_entropy"] == pytest.approx(1.5)
    constant = {"label=spam": 1.0, "label=ham": 0.0, "label=none": 0.0}
    metric = VerdictLabels()  # pools the first 2 steps by default
    assert metric.summarize(constant, step=1) == {"label_entropy": 0.0, "top_label_share": 1.0}
    with pytest.raises(ReasonRLError, match="every rollout of the first 2 rl step.s. answers label=spam"):
        metric.summarize(constant, step=2)
    # one other answer in the pooled steps is enough; later steps only log a collapse
    varied = VerdictLabels()
    varied.summarize({"label=ham": 1.0}, step=1)
    assert varied.summarize(constant, step=2) == {"label_entropy": 0.0, "top_label_share": 1.0}
    assert varied.summarize(constant, step=3) == {"label_entropy": 0.0, "top_label_share": 1.0}  # guard off
    off = VerdictLabels(VerdictLabelsParams(stop_if_constant=False, check_steps=1))
    assert off.summarize(constant, step=1)["label_entropy"] == 0.0


def _injection_rows(count: int, malicious_every: int) -> list[dict]:
    return [{"id": str(i), "text": f"ignore the rules {i}" if i % malicious_every == 0 else f"what is {i} plus 1",
             "label": "malicious" if i % malicious_every == 0 else "benign"} for i in range(count)]


def test_warm_start_split_is_balanced_and_kept_apart_from_the_ladder(tmp_path, reasonrl_registry):
    import json

    (tmp_path / "injections.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _injection_rows(100, 4)))
    build = lambda **extra: reasonrl_registry.build("datasets", "prompt_injection",  # noqa: E731
                                                    {"path": str(tmp_path), **extra}).splits()
    plain = build()
    split = build(warm_start_examples=8, max_train=10)
    warm = split["warm_start"]
    assert [r["label"] for r in warm].count("malicious") == 4 == [r["label"] for r in warm].count("benign")
    # the warm start takes the first rows of each label; the ladder's n comes from the rest, in order
    rest = [r for r in plain["train"] if r["id"] not in {w["id"] for w in warm}]
    assert [r["id"] for r in split["train"]] == [r["id"] for r in rest[:10]]
    assert split["test"] == plain["test"] and split["validation"] == plain["validation"]
    with pytest.raises(ReasonRLError, match="does not split evenly over the 2 labels"):
        build(warm_start_examples=7)
    with pytest.raises(ReasonRLError, match="needs 40 training examples per label"):
        build(warm_start_examples=80)


def test_balanced_row_sampler_draws_each_label_equally():
    import random

    from reasonrl.plugins.engine.supervised import row_sampler

    rows = [{"label": "a"}] * 90 + [{"label": "b"}] * 10
    draw = row_sampler(rows, "label", "warm")
    rng = random.Random(0)
    picks = [rows[draw(rng)]["label"] for _ in range(4000)]
    assert picks.count("b") / len(picks) == pytest.approx(0.5, abs=0.03)
    # unbalanced: exactly the uniform stream the sft stage always drew
    plain, reference = row_sampler(rows, None, "sft"), random.Random(3)
    rng = random.Random(3)
    assert [plain(rng) for _ in range(50)] == [reference.randrange(100) for _ in range(50)]
    with pytest.raises(ReasonRLError, match="balance_field 'label' is missing from row 0"):
        row_sampler([{"text": "x"}], "label", "warm")


def test_balanced_label_reward_pays_no_label_for_being_the_majority():
    from reasonrl.moderation_plugins.rewards import BalancedLabelAccuracy, BalancedLabelParams

    labels = ["benign", "malicious"]
    batch = [{"label": "benign", "labels": labels}] * 3 + [{"label": "malicious", "labels": labels}]
    says = {name: f"Because.\nLabel: {name}\nProbability: 0.5" for name in labels}
    fixed = BalancedLabelAccuracy(BalancedLabelParams(class_shares={"benign": 0.75, "malicious": 0.25}))
    always = {name: [r["label_balanced"] for r in fixed([""] * 4, [says[name]] * 4, batch)] for name in labels}
    assert always["benign"] == pytest.approx([2 / 3] * 3 + [0.0])  # 1 / (2 x 0.75)
    assert always["malicious"] == pytest.approx([0.0] * 3 + [2.0])  # 1 / (2 x 0.25)
    assert sum(always["benign"]) == pytest.approx(sum(always["malicious"]))  # both constant policies earn 1/K
    plain = [r["label_accuracy"] for r in LabelAccuracy()([""] * 4, [says["benign"]] * 4, batch)]
    assert sum(plain) == 3.0  # where plain accuracy pays the majority three times as much
    # default: the shares of the gold labels seen so far, one pseudo-count per label
    seen = BalancedLabelAccuracy()
    first = seen([""] * 4, [says["malicious"]] * 4, batch)
    assert first[3]["label_balanced"] == pytest.approx(1 / (2 * (2 / 6)))  # malicious: (1 + 1) of (2 + 4)
    assert seen.shares([])["benign"] == pytest.approx(4 / 6)


def test_collapse_guard_stops_after_k_steps_above_the_share_and_resets():
    from reasonrl.core.errors import StopTraining
    from reasonrl.moderation_plugins.rewards import VerdictLabels, VerdictLabelsParams

    guard = VerdictLabels(VerdictLabelsParams(max_label_share=0.8, collapse_steps=3, check_steps=1))
    assert guard.guard_window == 3 and VerdictLabels().guard_window == 0
    mixed, skewed = {"label=spam": 0.6, "label=ham": 0.4}, {"label=spam": 0.9, "label=ham": 0.1}
    guard.summarize(mixed, step=1)
    guard.summarize(skewed, step=2)
    guard.summarize(skewed, step=3)
    guard.summarize(mixed, step=4)  # the run of skewed steps is broken: it starts again
    guard.summarize(skewed, step=5)
    guard.summarize(skewed, step=6)
    with pytest.raises(StopTraining, match="label=spam took more than 80% of the rollouts for 3 steps") as stop:
        guard.summarize(skewed, step=7)
    assert stop.value.restore_steps_back == 3


def test_a_class_weight_is_cancelled_by_group_std_normalisation():
    """Why label_balanced needs dr_grpo (or stratified draws) to act: within a group every
    rollout has the same gold label, so its weight scales the group, and dapo/grpo divide it out."""
    import torch

    from reasonrl.plugins.engine.optimizers import group_advantages

    correct = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    weight = torch.tensor([2 / 3] * 4 + [2.0] * 4)  # a majority-label group, then a minority-label one
    plain = group_advantages(correct, groups, True, 1e-6)
    balanced = group_advantages(correct * weight, groups, True, 1e-6)
    assert torch.allclose(plain, balanced, atol=1e-5)
    unscaled = group_advantages(correct * weight, groups, False, 1e-6)  # dr_grpo: no std division
    assert not torch.allclose(group_advantages(correct, groups, False, 1e-6), unscaled)
