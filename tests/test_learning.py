"""The RL loop learns: on the sort task the mean reward clearly rises (fixed seed)."""

import pytest

from reasonrl.core.config import load_config
from reasonrl.core.pipeline import run_pipeline
from pathlib import Path

DEMO = Path(__file__).parents[1] / "plugins" / "demos" / "sort.yaml"


@pytest.mark.parametrize("optimizer", ["dapo", "grpo"])
def test_reward_rises_under(optimizer, tmp_path, reasonrl_registry):
    config = load_config(DEMO, [f"output_dir={tmp_path}", f"stages[1].optimizer.name={optimizer}",
                                "stages[0].progress=false", "stages[1].progress=false"])
    summary = run_pipeline(config, echo=lambda m: None)["rl"]
    assert summary["reward_last"] - summary["reward_first"] > 0.15, summary
