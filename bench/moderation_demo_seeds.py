"""The moderation demo over several seeds: each row's macro-F1, model ROC-AUC and answer counts
per seed, the step the RL stage kept, and each paired comparison's difference per seed with its
mean and 95% t-interval over seeds.

    reasonrl demo moderation --out runs/s0 --set seed=0      # and seed=1, 2, ... (--out each its own)
    python bench/moderation_demo_seeds.py runs/s0/moderation_quick runs/s1/moderation_quick ...

Each folder is a run of the demo config (or any run with a ``moderation_evaluate`` stage named
``evaluate``); ``--rl-stage`` names the stage whose ``selection.json`` says which step was kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path

import yaml

from reasonrl.plugins.studies.curves import t_interval


def load_run(run_dir: Path, evaluate: str, rl_stage: str) -> dict:
    report_path = run_dir / evaluate / "report.json"
    if not report_path.exists():
        raise SystemExit(f"{report_path} does not exist: run the demo into {run_dir.parent} first")
    config = yaml.safe_load((run_dir / "config.resolved.yaml").read_text())
    selection = run_dir / rl_stage / "selection.json"
    kept = json.loads(selection.read_text())["best"]["step"] if selection.exists() else None
    return {"seed": config.get("seed", 0), "report": json.loads(report_path.read_text()), "kept": kept}


def answers(row: dict) -> str:
    counts = Counter(row["predictions"])
    return " / ".join(str(counts[label]) for label in sorted(counts))


def top_share(row: dict) -> float:
    return max(Counter(row["predictions"]).values()) / len(row["predictions"])


def rows_table(runs: list[dict]) -> str:
    lines = ["| seed | row | macro-F1 | model ROC-AUC | answers per label (sorted by name) | top label share |",
             "|---|---|---|---|---|---|"]
    for run in runs:
        for name, row in run["report"]["rows"].items():
            model_roc = row.get("roc_auc_model")
            lines.append(f"| {run['seed']} | {name} | {row['macro_f1']:.4f} | "
                         f"{'-' if model_roc is None else f'{model_roc:.4f}'} | {answers(row)} | {top_share(row):.2f} |")
    return "\n".join(lines)


def comparison_table(runs: list[dict]) -> str:
    lines = ["| comparison | " + " | ".join(f"seed {r['seed']}" for r in runs) + " | mean [95% t-CI over seeds] |",
             "|---|" + "---|" * (len(runs) + 1)]
    for index, pair in enumerate(runs[0]["report"]["comparisons"]):
        per_seed = [run["report"]["comparisons"][index] for run in runs]
        diffs = [c["difference"] for c in per_seed]
        cells = [f"{c['difference']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]" for c in per_seed]
        interval = t_interval(diffs)
        mean = f"{statistics.fmean(diffs):+.4f}" + ("" if interval is None else
                                                     f" [{interval[0]:+.3f}, {interval[1]:+.3f}]")
        lines.append(f"| {pair['variant']} - {pair['baseline']} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of the demo, one per seed")
    parser.add_argument("--evaluate", default="evaluate", help="the moderation_evaluate stage's id")
    parser.add_argument("--rl-stage", default="rl_dapo", help="the moderation_rl stage's id")
    args = parser.parse_args()
    runs = [load_run(path, args.evaluate, args.rl_stage) for path in args.runs]
    print(rows_table(runs), end="\n\n")
    print("RL step kept by validation: " + ", ".join(f"seed {r['seed']}: {r['kept']}" for r in runs), end="\n\n")
    print(comparison_table(runs))


if __name__ == "__main__":
    main()
