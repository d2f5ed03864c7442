"""The separately installed example distribution is selectable by name and really called."""

import json

import pytest

from reasonrl.core import manager
from reasonrl.core.config import resolve_config
from reasonrl.core.pipeline import run_pipeline


@pytest.fixture
def with_entry_points(monkeypatch):
    monkeypatch.delenv(manager.NO_ENTRY_POINTS_ENV, raising=False)
    manager.reset()
    yield manager.get_registry()
    manager.reset()


def test_a_run_calls_the_installed_brevity_reward(tmp_path, with_entry_points):
    if "brevity" not in with_entry_points.names("reward_functions"):
        pytest.fail("install the example plugin first: pip install ./examples/plugins/reasonrl-example-reward")
    stage = {"stage": "rl", "id": "rl", "model": {"source": "tiny", "tiny": {"hidden_size": 32}},
             "dataset": "sort_digits", "rewards": ["sort_accuracy", {"name": "brevity", "params": {"max_chars": 4}}],
             "rollout": {"name": "hf", "params": {"max_new_tokens": 6}}, "steps": 2, "prompts_per_step": 2,
             "group_size": 4, "progress": False}
    config = resolve_config({"run_name": "ext", "output_dir": str(tmp_path), "stages": [stage]})
    run_pipeline(config, echo=lambda m: None)
    rows = [json.loads(line) for line in (tmp_path / "ext" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    # brevity = 1 - len / 4 averaged over samples: never above 1, and logged as its own component
    assert all(-1.0 <= row["rl/reward/brevity"] <= 1.0 for row in rows)
    # weighted_sum with unit weights: the scalar reward is the sum of both components, per sample
    assert all(row["rl/reward/mean"] == pytest.approx(row["rl/reward/sort_accuracy"] + row["rl/reward/brevity"])
               for row in rows)
