import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def fake_study(tmp_path: Path) -> Path:
    stage = {"stage": "moderation_study", "id": "ladder", "dataset": {"name": "harmful_response"},
             "values": [16, 32], "recipes": ["sft", "rl"], "seeds": [0, 1, 2], "metric": "macro_f1"}
    (tmp_path / "config.resolved.yaml").write_text(yaml.safe_dump({"run_name": "x", "stages": [stage]}))
    points = {"base": 0.40, "sft_examples16": 0.50, "rl_examples16": 0.55, "sft_examples16_seed1": 0.60,
              "rl_examples16_seed1": 0.58, "sft_examples16_seed2": 0.70, "rl_examples32": 0.62}
    for name, score in points.items():
        (tmp_path / "ladder" / name).mkdir(parents=True)
        (tmp_path / "ladder" / name / "point.json").write_text(
            json.dumps({"score": score, "metrics": {"macro_f1": score, "accuracy": score / 2}}))
    (tmp_path / "ladder" / "sft_examples32").mkdir()  # started, not finished: no point.json
    return tmp_path


def test_progress_lists_finished_points_with_means_intervals_and_paired_differences(tmp_path):
    from study_progress import progress_table

    text = progress_table(fake_study(tmp_path), "ladder")
    assert "starting model: 0.4000" in text
    # sft at 16: 0.5, 0.6, 0.7 -> mean 0.6, sd 0.1, t(0.975, 2) = 4.3027 -> 0.6 +- 0.2484
    assert "| sft | 16 | 3 of 3 | 0.5000, 0.6000, 0.7000 | 0.6000 [0.352, 0.848] |" in text
    assert "| sft | 32 | 0 of 3 | - | - |" in text
    assert "| rl | 32 | 1 of 3 | 0.6200 | 0.6200 |" in text
    assert "examples 16 seed 0: +0.0500; examples 16 seed 1: -0.0200" in text
    assert "seed 2" not in text.split("RL - SFT")[1]  # rl has no seed 2 at 16 yet
    assert "| rl | 16 | 2 of 3 | 0.5500, 0.5800 | 0.5650 [" in progress_table(tmp_path, "ladder")
    assert "| rl | 32 | 1 of 3 | 0.3100 | 0.3100 |" in progress_table(tmp_path, "ladder", "accuracy")


def test_progress_names_the_studies_when_the_stage_is_not_one(tmp_path):
    from study_progress import progress_table

    with pytest.raises(SystemExit, match=r"no moderation_study stage 'nope'; its studies: \['ladder'\]"):
        progress_table(fake_study(tmp_path), "nope")
    with pytest.raises(SystemExit, match="config.resolved.yaml does not exist"):
        progress_table(tmp_path / "missing", "ladder")
