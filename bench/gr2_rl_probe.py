"""Can RL move a GR2 student at all? RL from a finished run's SFT model, one setting at a time.

Each setting (``REWARD:LR[:WARMUP[:PROMPTS]]``) reruns the run's RL stage from its SFT model on a
scratch copy of the run (the run itself is not touched), then its evaluation with two variants,
SFT and RL. The table gives, per setting, the rollouts' share that lists the co-watching rule's top
three (and that starts with the rule's first) over the first and the last 8 steps, the greedy
answers' shares on the test lists, and RL - SFT in NDCG@5 with its paired 95% interval.

``co_watching_copy`` pays 1 for the rule's top three and reads no target: a noiseless signal
towards the answer the SFT student half-copies. If RL cannot raise the copy with it, the noise of
the verifiable reward (``rank_gain``, see ``bench/gr2_rule_margin.py``) is not the only obstacle.

    python bench/gr2_rl_probe.py runs/gr2_ml1m_hint --setting co_watching_copy:1e-4 \\
        --setting co_watching_copy:3e-4:6 --setting co_watching_copy:1e-3 --out bench/results/gr2_rl_probe.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from bench_output import save_table  # noqa: E402

WINDOW = 8  # steps averaged at each end of the run
SFT_VARIANT, RL_VARIANT = "SFT", "RL"


@dataclass
class Setting:
    reward: str
    lr: float
    warmup: int = 0
    prompts: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Setting":
        parts = text.split(":")
        if not 2 <= len(parts) <= 4:
            raise SystemExit(f"--setting {text!r}: expected REWARD:LR[:WARMUP[:PROMPTS]], e.g. co_watching_copy:3e-4:6")
        return cls(parts[0], float(parts[1]), int(parts[2]) if len(parts) > 2 else 0,
                   int(parts[3]) if len(parts) > 3 else None)

    def label(self, default_prompts: int, steps: int) -> str:
        warm = f" (warm-up {self.warmup})" if self.warmup else ""
        return f"| {self.reward} | {self.lr:g}{warm} | {self.prompts or default_prompts} x {steps} |"


def stage_index(config: dict, kind: str, stage_id: str | None = None) -> int:
    for i, stage in enumerate(config["stages"]):
        if stage["stage"] == kind and (stage_id is None or stage.get("id") == stage_id):
            return i
    raise SystemExit(f"the run's config has no {kind} stage{f' with id {stage_id!r}' if stage_id else ''}")


def overrides(config: dict, rl_id: str, setting: Setting, steps: int) -> list[str]:
    """``--set`` values: the rl stage under the setting (rank_gain logged beside any other reward, at
    weight 0) and an evaluation of SFT against RL only."""
    rl, ev = stage_index(config, "rl", rl_id), stage_index(config, "gr2_evaluate")
    sft = config["stages"][rl]["model"]["stage"]
    rewards, weights = [f"{{name: {setting.reward}}}"], {setting.reward: 1.0}
    if setting.reward != "rank_gain":
        rewards.append("{name: rank_gain, params: {k: 3}}")
        weights["rank_gain"] = 0.0
    out = [f"stages[{rl}].rewards=[{', '.join(rewards)}]",
           f"stages[{rl}].combiner={{name: weighted_sum, params: {{weights: {json.dumps(weights)}, "
           f"required: [{setting.reward}]}}}}",
           f"stages[{rl}].steps={steps}", f"stages[{rl}].lr={setting.lr}", f"stages[{rl}].warmup_steps={setting.warmup}",
           f"stages[{ev}].variants=[{{name: {SFT_VARIANT}, stage: {sft}}}, {{name: {RL_VARIANT}, stage: {rl_id}}}]",
           f"stages[{ev}].comparisons=[[{SFT_VARIANT}, {RL_VARIANT}]]"]
    if setting.prompts:
        out.append(f"stages[{rl}].prompts_per_step={setting.prompts}")
    return out


def evaluation_id(config: dict) -> str:
    return config["stages"][stage_index(config, "gr2_evaluate")].get("id", "evaluate")


def scratch_copy(run: Path, config: dict, rl_id: str, parent: Path) -> Path:
    """The run's folder without the probed RL stage and the evaluation (real copies: the pipeline
    only reads the skipped stages, but a copy keeps even a mistake away from the run)."""
    target = parent / config["run_name"]
    skip = {rl_id, evaluation_id(config)}
    target.mkdir(parents=True)
    for item in run.resolve().iterdir():
        if item.is_dir() and item.name not in skip and not item.name.startswith("."):
            shutil.copytree(item, target / item.name)
    return target


def windows(metrics_file: Path, rl_id: str) -> dict[str, tuple[float, float]]:
    """Means of the rollouts' rule-following shares over the first and last WINDOW steps of the
    latest attempt."""
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    key = f"{rl_id}/metric/co_watching_top3"
    latest = max((r.get("attempt", 0) for r in rows if key in r), default=None)
    steps = sorted((r for r in rows if key in r and r.get("attempt", 0) == latest), key=lambda r: r["step"])
    if not steps:
        raise SystemExit(f"{metrics_file} has no {key}: the rl stage needs metrics: [ranking_behaviour]")
    out = {}
    for name in ("co_watching_top3", "co_watching_first"):
        values = [r[f"{rl_id}/metric/{name}"] for r in steps]
        out[name] = (statistics.fmean(values[:WINDOW]), statistics.fmean(values[-WINDOW:]))
    return out


def greedy_cells(report: dict) -> str:
    rl, sft = report["rows"][RL_VARIANT], report["rows"][SFT_VARIANT]
    comparison = report["comparisons"][0]
    low, high = comparison["ci95"]
    return (f"{rl['co_watching_first_rate']:.2f} / {rl['co_watching_top3_rate']:.2f} "
            f"(SFT {sft['co_watching_first_rate']:.2f} / {sft['co_watching_top3_rate']:.2f}) | "
            f"{comparison['difference']:+.4f} [{low:+.3f}, {high:+.3f}]")


def probe(run: Path, config: dict, rl_id: str, setting: Setting, steps: int) -> str:
    with tempfile.TemporaryDirectory(prefix="gr2_rl_probe_") as tmp:
        scratch = scratch_copy(run, config, rl_id, Path(tmp))
        command = [sys.executable, "-m", "reasonrl", "run", str(run / "config.resolved.yaml"),
                   "--set", f"output_dir={tmp}"]
        for value in overrides(config, rl_id, setting, steps):
            command += ["--set", value]
        started = time.monotonic()
        subprocess.run(command, check=True)
        minutes = (time.monotonic() - started) / 60
        shares = windows(scratch / "metrics.jsonl", rl_id)
        report = json.loads((scratch / evaluation_id(config) / "report.json").read_text())
    top3, first = shares["co_watching_top3"], shares["co_watching_first"]
    default_prompts = config["stages"][stage_index(config, "rl", rl_id)].get("prompts_per_step", 8)
    return (f"{setting.label(default_prompts, steps)} {top3[0]:.3f} -> {top3[1]:.3f} | "
            f"{first[0]:.3f} -> {first[1]:.3f} | {greedy_cells(report)} | {minutes:.1f} |")


HEADER = ("| reward | lr | prompts x steps | rollouts listing the rule's top three (first -> last 8 steps) | "
          "rollouts starting with the rule's first | greedy on the test lists: rule's first / top three | "
          "RL - SFT NDCG@5 [95% CI] | minutes |\n|---|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a finished run with prompt evidence (e.g. runs/gr2_ml1m_hint)")
    parser.add_argument("--setting", action="append", required=True, type=Setting.parse,
                        help="REWARD:LR[:WARMUP[:PROMPTS]], repeatable, run in order")
    parser.add_argument("--stage", default="rl_gain", help="the run's rl stage id")
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    config = yaml.safe_load((args.run / "config.resolved.yaml").read_text())
    lines = [HEADER]
    for setting in args.setting:
        lines.append(probe(args.run, config, args.stage, setting, args.steps))
        print(lines[-1], flush=True)
    text = (f"RL from the SFT model of {args.run} ({os.environ.get('OMP_NUM_THREADS', 'default')} torch threads):"
            f"\n\n" + "\n".join(lines) + "\n")
    print(text)
    save_table(args.out, "gr2_rl_probe.py", argv, text)


if __name__ == "__main__":
    main()
