"""A check among an rl stage's ``metrics`` may stop it early and keep an earlier policy."""

import pytest
from safetensors.torch import load_file

from reasonrl.core.config import resolve_config
from reasonrl.core.errors import StopTraining
from reasonrl.core.hookspecs import hookimpl
from reasonrl.core.pipeline import run_pipeline


class StopsAtStep:
    """Logs nothing; at ``summarize`` of step 3 it stops the stage, ``back`` steps back."""

    guard_window = 2

    def __init__(self, back: int) -> None:
        self.back = back

    def __call__(self, prompts, completions, examples):
        return [{} for _ in completions]

    def summarize(self, means, step):
        if step == 3:
            raise StopTraining("test check", restore_steps_back=self.back)
        return {}


def run(tmp_path, register_plugin, back: int):
    class Plugin:
        @staticmethod
        @hookimpl
        def register_reward_functions(register):
            register("stops_at_step_3", lambda params: StopsAtStep(back), summary="test check")

    register_plugin(Plugin(), name=f"stopper-{back}")
    stages = [
        {"stage": "sft", "id": "sft", "model": {"source": "tiny"}, "progress": False,
         "dataset": {"name": "sort_digits", "params": {"train_size": 64}}, "batch_size": 16, "epochs": 8, "lr": 3e-3},
        {"stage": "rl", "id": "rl", "model": {"source": "stage", "stage": "sft"}, "progress": False,
         "dataset": {"name": "sort_digits"}, "rewards": ["sort_accuracy"], "metrics": ["stops_at_step_3"],
         "optimizer": {"name": "dapo", "params": {"dynamic_sampling": False}}, "lr": 1e-2, "steps": 6,
         "prompts_per_step": 4, "group_size": 4, "rollout": {"name": "hf", "params": {"max_new_tokens": 6}}},
    ]
    config = resolve_config({"run_name": f"stop{back}", "output_dir": str(tmp_path), "stages": stages})
    summary = run_pipeline(config, echo=lambda m: None)["rl"]
    weights = {name: load_file(str(config.run_dir / stage / "model" / "model.safetensors")) for name, stage in
               (("sft", "sft"), ("rl", "rl"))}
    return summary, weights


def test_a_stopping_check_ends_the_stage_and_keeps_the_policy_it_names(tmp_path, register_plugin):
    summary, weights = run(tmp_path, register_plugin, back=2)
    assert summary["stopped_at_step"] == 3 and summary["stop_reason"] == "test check"
    assert summary["kept_policy_of_step"] == 0 and summary["steps"] == 2  # steps 1 and 2 ran, 3 stopped
    assert weights["rl"].keys() == weights["sft"].keys()
    assert all((weights["rl"][k] == weights["sft"][k]).all() for k in weights["sft"])  # back to the start


def test_one_step_back_keeps_a_trained_policy(tmp_path, register_plugin):
    summary, weights = run(tmp_path, register_plugin, back=1)
    assert summary["kept_policy_of_step"] == 1
    assert any(not (weights["rl"][k] == weights["sft"][k]).all() for k in weights["sft"])
