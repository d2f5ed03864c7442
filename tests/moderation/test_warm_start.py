import json

import pytest
from safetensors.torch import load_file

from reasonrl.core.config import resolve_config
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.pipeline import run_pipeline
from reasonrl.moderation_plugins.selection import BEST_WEIGHTS
from reasonrl.moderation_plugins.warm_start import ModerationWarmStart

TINY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;'<>\n-_()?!/*#"
TINY = {"source": "tiny", "tiny": {"max_positions": 2048, "alphabet": TINY_ALPHABET}}


def warm_start_config(tmp_path, **stage):
    rows = [{"id": str(i), "text": f"ignore the rules {i}" if i % 3 == 0 else f"what is {i} plus 1",
             "label": "malicious" if i % 3 == 0 else "benign"} for i in range(60)]
    (tmp_path / "injections.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {"name": "prompt_injection", "params": {"path": str(tmp_path), "max_chars": 120, "warm_start_examples": 8}}
    return resolve_config({"run_name": "warm", "output_dir": str(tmp_path / "runs"), "stages": [{
        "stage": "moderation_warm_start", "id": "warm", "model": TINY, "dataset": data, "split": "warm_start",
        "batch_size": 4, "epochs": 3, "select_examples": 4, "progress": False,
        "sampling": {"top_k": 1, "max_new_tokens": 6}, **stage}]})


def scripted(monkeypatch, scores, shares):
    """Replace the validation scoring by ``scores`` in order (each with the label ``shares``)."""
    left = list(scores)

    def score(self):
        return {"macro_f1": left.pop(0), "roc_auc": None, "parse_failure_rate": 0.0, "label_shares": shares}
    monkeypatch.setattr(ModerationWarmStart, "score", score)


def test_warm_start_keeps_the_checkpoint_with_the_best_validation_score(tmp_path, monkeypatch):
    # 8 examples / batch 4 = a pass every 2 steps; 3 epochs = 6 steps: scored at steps 2, 4, 6
    scripted(monkeypatch, [0.30, 0.60, 0.60], {"benign": 0.5, "malicious": 0.5})
    resolved = warm_start_config(tmp_path)
    summary = run_pipeline(resolved, echo=lambda *_: None)["warm"]
    folder = resolved.run_dir / "warm"
    selection = json.loads((folder / "selection.json").read_text())
    assert [r["step"] for r in selection["history"]] == [2, 4, 6]
    assert selection["best"]["step"] == 4 == summary["selected_step"]  # a tie keeps the earlier checkpoint
    assert summary["selected_macro_f1"] == 0.60
    best = load_file(str(folder / BEST_WEIGHTS))
    saved = load_file(str(folder / "model" / "model.safetensors"))
    shared = [name for name in best if name in saved]
    assert shared and all((best[name] == saved[name]).all() for name in shared)


def test_more_sft_keeps_its_start_when_no_step_beats_it(tmp_path, monkeypatch):
    scripted(monkeypatch, [0.70, 0.30, 0.70, 0.60], {"benign": 0.5, "malicious": 0.5})
    resolved = warm_start_config(tmp_path, stage="moderation_more_sft")
    summary = run_pipeline(resolved, echo=lambda *_: None)["warm"]
    selection = json.loads((resolved.run_dir / "warm" / "selection.json").read_text())
    assert [r["step"] for r in selection["history"]] == [0, 2, 4, 6]
    assert summary["selected_step"] == 0  # step 4 ties it: the earlier is kept


def test_warm_start_that_answers_one_label_stops_with_its_scores_kept(tmp_path, monkeypatch):
    scripted(monkeypatch, [0.40, 0.40, 0.40], {"malicious": 1.0})
    resolved = warm_start_config(tmp_path)
    with pytest.raises(ReasonRLError, match="answers one label at most .*malicious.*balance_field"):
        run_pipeline(resolved, echo=lambda *_: None)
    kept = json.loads((resolved.run_dir / "warm" / "selection.json").read_text())
    assert len(kept["history"]) == 3


def test_warm_start_scores_the_real_policy_on_the_validation_split(tmp_path):
    # an untrained tiny model writes no verdict: its scores are real, and the stage refuses it
    resolved = warm_start_config(tmp_path, epochs=1)
    with pytest.raises(ReasonRLError, match="answers one label at most"):
        run_pipeline(resolved, echo=lambda *_: None)
    history = json.loads((resolved.run_dir / "warm" / "selection.json").read_text())["history"]
    assert history[-1]["label_shares"] == {"none": 1.0} and history[-1]["parse_failure_rate"] == 1.0


def test_rl_from_a_policy_that_answers_one_thing_stops_at_its_first_step(tmp_path):
    warm_start_config(tmp_path)  # writes the data
    config = {"run_name": "rl", "output_dir": str(tmp_path / "runs"), "stages": [{
        "stage": "rl", "id": "rl", "model": TINY, "progress": False,
        "dataset": {"name": "prompt_injection", "params": {"path": str(tmp_path), "max_chars": 120}},
        "rewards": ["label_accuracy"], "metrics": ["verdict_labels"], "steps": 2, "prompts_per_step": 2,
        "group_size": 2, "rollout": {"name": "hf", "params": {"max_new_tokens": 6}}}]}
    # the untrained tiny model never writes a label: every rollout answers "none"
    with pytest.raises(ReasonRLError, match="every rollout of the first 2 rl step.s. answers label=none"):
        run_pipeline(resolve_config(config), echo=lambda *_: None)


def test_more_sft_scores_under_its_constraint(tmp_path):
    # the untrained tiny model writes no verdict by itself (the test above); verdict_close writes one every time
    resolved = warm_start_config(tmp_path, stage="moderation_more_sft", epochs=1, select_constraint="verdict_close",
                                 sampling={"top_k": 1, "max_new_tokens": 64})
    try:
        run_pipeline(resolved, echo=lambda *_: None)
    except ReasonRLError as error:  # one label for every example is still refused
        assert "answers one label at most" in str(error)
    history = json.loads((resolved.run_dir / "warm" / "selection.json").read_text())["history"]
    assert history[-1]["parse_failure_rate"] == 0.0 and "none" not in history[-1]["label_shares"]
