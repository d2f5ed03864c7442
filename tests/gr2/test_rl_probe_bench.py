import importlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

CONFIG = {"run_name": "r", "stages": [
    {"stage": "gr2_prepare", "id": "prepare"},
    {"stage": "sft", "id": "sft"},
    {"stage": "rl", "id": "rl_gain", "model": {"source": "stage", "stage": "sft"}, "prompts_per_step": 8},
    {"stage": "gr2_evaluate", "id": "evaluate"}]}


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("gr2_rl_probe")


def test_settings_parse_and_reject_a_bad_one(bench):
    assert bench.Setting.parse("co_watching_copy:3e-4:6:32") == bench.Setting("co_watching_copy", 3e-4, 6, 32)
    assert bench.Setting.parse("rank_gain:1e-4") == bench.Setting("rank_gain", 1e-4, 0, None)
    with pytest.raises(SystemExit, match="REWARD:LR"):
        bench.Setting.parse("co_watching_copy")


def test_overrides_aim_at_the_rl_and_evaluate_stages(bench):
    values = bench.overrides(CONFIG, "rl_gain", bench.Setting("co_watching_copy", 1e-3, 6, 32), steps=20)
    assert "stages[2].rewards=[{name: co_watching_copy}, {name: rank_gain, params: {k: 3}}]" in values
    assert ('stages[2].combiner={name: weighted_sum, params: {weights: {"co_watching_copy": 1.0, "rank_gain": 0.0}, '
            'required: [co_watching_copy]}}') in values
    assert {"stages[2].steps=20", "stages[2].lr=0.001", "stages[2].warmup_steps=6",
            "stages[2].prompts_per_step=32"} <= set(values)
    assert "stages[3].variants=[{name: SFT, stage: sft}, {name: RL, stage: rl_gain}]" in values
    # rank_gain as the probed reward is not listed twice
    plain = bench.overrides(CONFIG, "rl_gain", bench.Setting("rank_gain", 1e-4), steps=48)
    assert "stages[2].rewards=[{name: rank_gain}]" in plain
    with pytest.raises(SystemExit, match="no rl stage with id 'rl_x'"):
        bench.overrides(CONFIG, "rl_x", bench.Setting("rank_gain", 1e-4), steps=48)


def test_windows_average_the_first_and_last_steps_of_the_latest_attempt(bench, tmp_path):
    rows = [{"attempt": 1, "step": s, "rl_gain/metric/co_watching_top3": 0.9, "rl_gain/metric/co_watching_first": 0.9}
            for s in range(1, 20)]
    rows += [{"attempt": 2, "step": s, "rl_gain/metric/co_watching_top3": s / 100,
              "rl_gain/metric/co_watching_first": 1.0} for s in range(1, 21)]
    rows.append({"attempt": 2, "step": 3, "rl_gain/loss": 0.1})  # a row without the metric
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    shares = bench.windows(path, "rl_gain")
    assert shares["co_watching_top3"] == pytest.approx((0.045, 0.165))  # steps 1-8 and 13-20
    assert shares["co_watching_first"] == pytest.approx((1.0, 1.0))


def test_scratch_copy_leaves_out_the_probed_stages(bench, tmp_path):
    run = tmp_path / "run"
    for name in ("prepare", "sft", "rl_gain", "evaluate", ".run.holders"):
        (run / name).mkdir(parents=True)
        (run / name / "x").write_text(name)
    copy = bench.scratch_copy(run, CONFIG, "rl_gain", tmp_path / "scratch")
    assert sorted(p.name for p in copy.iterdir()) == ["prepare", "sft"]
    assert (copy / "sft" / "x").read_text() == "sft"
