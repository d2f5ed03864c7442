"""The ``moderation_rl`` stage scores its start and its steps on validation and saves the best."""

import json

from safetensors.torch import load_file

from reasonrl.core.config import resolve_config
from reasonrl.core.hookspecs import hookimpl
from reasonrl.core.pipeline import run_pipeline
from reasonrl.moderation_plugins.keyword_policy import ALPHABET, write_keyword_task
from reasonrl.moderation_plugins.rl_stage import ModerationRL
from reasonrl.moderation_plugins.selection import BEST_WEIGHTS

TINY = {"source": "tiny", "tiny": {"alphabet": ALPHABET, "max_positions": 1024}}


class OddFirstCharacter:
    """A reward with spread inside every group, so each step moves the weights."""

    def __call__(self, prompts, completions, examples):
        return [{"odd": float(bool(c) and ord(c[0]) % 2 == 1)} for c in completions]


def with_odd_reward(register_plugin):
    class Plugin:
        @staticmethod
        @hookimpl
        def register_reward_functions(register):
            register("odd_first_character", lambda params: OddFirstCharacter(), summary="test reward")

    register_plugin(Plugin(), name="odd-first-character")


def run_rl(tmp_path, name, **stage):
    data = write_keyword_task(tmp_path / "data", "kw", 2)
    config = resolve_config({"run_name": name, "output_dir": str(tmp_path / "runs"), "seed": 0, "stages": [{
        "stage": "moderation_rl", "id": "rl", "model": TINY, "dataset": data, "rewards": ["odd_first_character"],
        "optimizer": {"name": "dapo", "params": {"dynamic_sampling": False}}, "lr": 1e-2, "steps": 4,
        "prompts_per_step": 2, "group_size": 4, "rollout": {"name": "hf", "params": {"max_new_tokens": 4}},
        "select_every": 2, "select_examples": 4, "sampling": {"top_k": 1, "max_new_tokens": 4}, "progress": False,
        **stage}]})
    summary = run_pipeline(config, echo=lambda *_: None)["rl"]
    folder = config.run_dir / "rl"
    return summary, folder, load_file(str(folder / "model" / "model.safetensors"))


def scripted(monkeypatch, scores):
    left = list(scores)

    def score(self):
        return {"macro_f1": left.pop(0), "roc_auc": None, "parse_failure_rate": 0.0, "cut_rate": 0.0,
                "label_shares": {"allowed": 0.5, "violating": 0.5}}
    monkeypatch.setattr(ModerationRL, "score", score)


def same(a, b):
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_rl_that_never_beats_its_start_on_validation_saves_the_start(tmp_path, monkeypatch, register_plugin):
    with_odd_reward(register_plugin)
    scripted(monkeypatch, [0.60, 0.50, 0.60])  # steps 0, 2, 4: a tie keeps the earlier (the start)
    kept_start, folder, start_weights = run_rl(tmp_path, "start")
    selection = json.loads((folder / "selection.json").read_text())
    assert [r["step"] for r in selection["history"]] == [0, 2, 4]
    assert kept_start["selected_step"] == 0 and kept_start["selected_macro_f1"] == 0.60
    assert kept_start["steps"] == 4  # RL ran every step; only the saved policy is the start's
    assert same(load_file(str(folder / BEST_WEIGHTS)), start_weights)

    scripted(monkeypatch, [0.50, 0.40, 0.70])
    kept_last, _, last_weights = run_rl(tmp_path, "last")
    assert kept_last["selected_step"] == 4
    assert not same(start_weights, last_weights)  # the four steps moved the policy; the first run undid them


def test_rl_scores_under_its_decoding_constraint(tmp_path, register_plugin):
    # an untrained tiny model never writes a verdict by itself; verdict_close writes one in every answer
    with_odd_reward(register_plugin)
    budget = {"max_new_tokens": 64}
    _, free, _ = run_rl(tmp_path, "free", steps=1, sampling={"top_k": 1, **budget})
    _, closed, _ = run_rl(tmp_path, "closed", steps=1, constraint="verdict_close", sampling={"top_k": 1, **budget},
                          rollout={"name": "hf", "params": budget})
    free_scores = json.loads((free / "selection.json").read_text())["history"]
    closed_scores = json.loads((closed / "selection.json").read_text())["history"]
    assert [r["parse_failure_rate"] for r in free_scores] == [1.0, 1.0]
    assert [r["parse_failure_rate"] for r in closed_scores] == [0.0, 0.0]
    assert "none" not in closed_scores[0]["label_shares"]
