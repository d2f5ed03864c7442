"""GR2 variants over several training seeds: per-seed NDCG@5, the mean with a t interval
across seeds, and paired differences pooled over every (seed, list) pair.

    reasonrl demo gr2                                                     # seed 0
    reasonrl run examples/gr2_ml100k_quick.yaml --set seed=1 --set run_name=gr2_ml100k_quick_seed1
    reasonrl run examples/gr2_ml100k_quick.yaml --set seed=2 --set run_name=gr2_ml100k_quick_seed2
    python bench/gr2_seeds.py runs/gr2_ml100k_quick runs/gr2_ml100k_quick_seed1 runs/gr2_ml100k_quick_seed2

The comparisons are those of the runs' ``gr2_evaluate`` stage (``comparisons:``). The pooled
bootstrap resamples lists within each seed, so each seed keeps its weight.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml

from reasonrl.gr2_plugins.metrics import paired_bootstrap
from reasonrl.plugins.studies.curves import t_interval


def seed_label(config: dict, fallback: str) -> str:
    """The run's seed, with the stages' own ``seed_offset`` where one is set: runs that share their
    early stages and vary only a later stage's seed (e.g. RL seeds from one SFT model) read "0+1"."""
    offsets = sorted({st["seed_offset"] for st in config.get("stages", []) if st.get("seed_offset")})
    seed = str(config.get("seed", fallback))
    return seed + "".join(f"+{offset}" for offset in offsets)


def load_report(run_dir: Path, stage: str) -> dict:
    path = run_dir / stage / "report.json"
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run the pipeline first (see this script's docstring)")
    report = json.loads(path.read_text())
    if "comparisons" not in report or any("ndcg@5_per_list" not in m for m in report["rows"].values()):
        raise SystemExit(f"{path} has no per-list NDCG@5: it was written by an older gr2_evaluate; rerun that stage")
    return report


def mean_interval(values: list[float]) -> str:
    mean, interval = statistics.fmean(values), t_interval(values)
    return f"{mean:.4f}" if interval is None else f"{mean:.4f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def variant_table(reports: list[dict], metric: str = "ndcg@5", digits: int = 4) -> str:
    lines = ["| variant | " + " | ".join(f"seed {r['seed']}" for r in reports) + " | mean [95% t-CI over seeds] |",
             "|---|" + "---|" * (len(reports) + 1)]
    for name in reports[0]["order"]:
        if any(metric not in r["rows"][name] for r in reports):
            continue  # e.g. the pre-ranker has no generated answers to count
        values = [r["rows"][name][metric] for r in reports]
        lines.append(f"| {name} | " + " | ".join(f"{v:.{digits}f}" for v in values) + f" | {mean_interval(values)} |")
    return "\n".join(lines)


def pooled_comparisons(reports: list[dict], samples: int) -> str:
    lines = ["| comparison | " + " | ".join(f"seed {r['seed']}" for r in reports) +
             " | pooled difference | pooled 95% CI | verdict |", "|---|" + "---|" * (len(reports) + 3)]
    for pair in reports[0]["comparisons"]:
        baseline, variant = pair["baseline"], pair["variant"]
        base, var, strata, per_seed = [], [], [], []
        for r in reports:
            b, v = r["rows"][baseline]["ndcg@5_per_list"], r["rows"][variant]["ndcg@5_per_list"]
            base += b
            var += v
            strata += [str(r["seed"])] * len(b)
            per_seed.append(statistics.fmean(v) - statistics.fmean(b))
        result = paired_bootstrap(base, var, samples, strata=strata)
        lo, hi = result["ci95"]
        verdict = "better" if lo > 0 else "worse" if hi < 0 else "no difference shown"
        lines.append(f"| {variant} - {baseline} | " + " | ".join(f"{d:+.4f}" for d in per_seed) +
                     f" | {result['difference']:+.4f} | [{lo:+.4f}, {hi:+.4f}] | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders of the same config, one per seed")
    parser.add_argument("--stage", default="evaluate", help="the gr2_evaluate stage's id")
    parser.add_argument("--samples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    args = parser.parse_args()
    reports = []
    for run in args.runs:
        report = load_report(run, args.stage)
        config = yaml.safe_load((run / "config.resolved.yaml").read_text())
        report["seed"] = seed_label(config, run.name)
        stage = next(st for st in config["stages"] if st.get("id") == args.stage)
        report["order"] = [v["name"] for v in stage["variants"]]  # the config's row order
        reports.append(report)
    lists = reports[0]["lists"]
    text = (f"NDCG@5 per training seed ({lists} test lists each):\n\n{variant_table(reports)}\n\n"
            f"Parse failure rate per training seed:\n\n{variant_table(reports, 'parse_failure_rate', 2)}\n\n"
            f"Share of answers whose JSON object the decoding constraint opened (the model never opened one: the token "
            f"budget ran low, or it wrote the key outside an object):\n\n{variant_table(reports, 'constraint_opened_rate', 2)}\n\n"
            f"Paired differences in NDCG@5, pooled over {len(reports)} seeds x {lists} lists (bootstrap within "
            f"seeds):\n\n{pooled_comparisons(reports, args.samples)}\n")
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
