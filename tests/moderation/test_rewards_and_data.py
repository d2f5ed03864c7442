import pytest

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
    from reasonrl.plugins.rl import mean_components

    answers = ["Label: spam", "Label: spam", "Label: ham", "no verdict here"]
    rows = VerdictLabels()([""] * 4, answers, [EX] * 4)
    assert all(sum(row.values()) == 1.0 for row in rows)
    shares = mean_components(rows, "metric/")
    assert shares == {"metric/label=spam": 0.5, "metric/label=ham": 0.25, "metric/label=none": 0.25}
