import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def fake_run(folder: Path, seed: int, base: list[float], rl: list[float]) -> Path:
    (folder / "evaluate").mkdir(parents=True)
    rows = {name: {"ndcg@5": sum(v) / len(v), "parse_failure_rate": 0.0, "ndcg@5_per_list": v}
            for name, v in (("SFT", base), ("RL", rl))}
    rows["RL"]["constraint_opened_rate"] = 0.1 * (seed + 1)  # the SFT row stands for one without answers to count
    report = {"lists": len(base), "rows": rows, "comparisons": [{"baseline": "SFT", "variant": "RL"}]}
    (folder / "evaluate" / "report.json").write_text(json.dumps(report))
    stage = {"id": "evaluate", "variants": [{"name": "SFT"}, {"name": "RL"}]}
    (folder / "config.resolved.yaml").write_text(yaml.safe_dump({"seed": seed, "stages": [stage]}))
    return folder


def test_seeds_report_pools_paired_differences_within_seeds(tmp_path):
    # seed 0: RL gains 0.5 on each list; seed 1: RL gains 0.0; pooled mean 0.25 with a zero-width interval
    first = fake_run(tmp_path / "a", 0, [0.0, 0.5], [0.5, 1.0])
    second = fake_run(tmp_path / "b", 1, [0.2, 0.3], [0.2, 0.3])
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gr2_seeds.py"), str(first), str(second),
                          "--samples", "200"], capture_output=True, text=True, check=True).stdout
    assert "| RL - SFT | +0.5000 | +0.0000 | +0.2500 | [+0.2500, +0.2500] | better |" in out
    assert "| SFT | 0.2500 | 0.2500 | 0.2500 [0.250, 0.250] |" in out
    rl_row = next(line for line in out.splitlines() if line.startswith("| RL | 0.7500 | 0.2500 |"))
    assert "0.5000 [" in rl_row  # the mean over seeds with a t interval over 2 seeds
    budget = out.split("whose JSON object the decoding constraint opened")[1].split("Paired differences")[0]
    assert "| RL | 0.10 | 0.20 | 0.1500 [" in budget and "| SFT |" not in budget


def test_seeds_report_names_an_old_report(tmp_path):
    run = fake_run(tmp_path / "a", 0, [0.0], [1.0])
    report = json.loads((run / "evaluate" / "report.json").read_text())
    del report["comparisons"]
    (run / "evaluate" / "report.json").write_text(json.dumps(report))
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gr2_seeds.py"), str(run)], capture_output=True,
                            text=True)
    assert result.returncode != 0 and "older gr2_evaluate" in result.stderr
