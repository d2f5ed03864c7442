"""Which part of the moderation RL recipe keeps a policy from collapsing onto the majority label?

On the synthetic keyword policy (`reasonrl.moderation_plugins.keyword_policy`: 1 violating
text for 2 allowed ones), a tiny student gets a class-balanced label-only SFT start, then each
RL recipe runs from it for the same steps; the test split is scored with paired macro-F1
differences against the plain recipe, per seed and pooled.

    python bench/moderation_recipe_ablation.py --seeds 0 1 2 --out /tmp/ablation   # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

from reasonrl.core.config import resolve_config
from reasonrl.core.pipeline import run_pipeline
from reasonrl.moderation_plugins.keyword_policy import ALPHABET, write_keyword_task
from reasonrl.moderation_plugins.metrics import macro_f1, paired_metric_bootstrap

GUARD = {"name": "verdict_labels", "params": {"max_label_share": 0.8, "collapse_steps": 3}}
RECIPES = {
    "plain (label_accuracy, uniform draws)": {},
    "+ collapse guard": {"metrics": [GUARD]},
    "+ label_balanced": {"rewards": ["label_balanced", "verdict_format"], "weights": "label_balanced"},
    "+ stratified draws": {"prompt_draws": "stratified"},
    "+ stratified draws + per-class advantages": {"prompt_draws": "stratified", "balance_advantages": True},
    "full recipe (balanced, stratified, KL 0.01, guard)": {
        "rewards": ["label_balanced", "verdict_format"], "weights": "label_balanced", "prompt_draws": "stratified",
        "metrics": [GUARD], "beta": 0.01},
    "full recipe + per-class advantages": {
        "rewards": ["label_balanced", "verdict_format"], "weights": "label_balanced", "prompt_draws": "stratified",
        "metrics": [GUARD], "beta": 0.01, "balance_advantages": True},
}


def rl_stage(index: int, recipe: dict, data: dict, steps: int, lr: float) -> dict:
    reward = recipe.get("weights", "label_accuracy")
    return {"stage": "rl", "id": f"rl{index}", "model": {"source": "stage", "stage": "sft"}, "dataset": data,
            "optimizer": {"name": "dapo", "params": {"beta": recipe.get("beta", 0.0)}},
            "rewards": recipe.get("rewards", ["label_accuracy", "verdict_format"]),
            "combiner": {"name": "weighted_sum", "params": {"weights": {reward: 1.0, "format": 0.2}}},
            "prompt_draws": recipe.get("prompt_draws", "uniform"), "constraint": "verdict_close",
            "balance_advantages": recipe.get("balance_advantages", False),
            "metrics": recipe.get("metrics", ["verdict_labels"]),
            "rollout": {"name": "hf", "params": {"max_new_tokens": 80, "temperature": 1.0}},
            "steps": steps, "prompts_per_step": 8, "group_size": 8, "lr": lr, "progress": False}


def run_seed(folder: Path, seed: int, steps: int, lr: float) -> dict:
    balanced, data = write_keyword_task(folder, "balanced", 2), write_keyword_task(folder, "skewed", 3)
    tiny = {"source": "tiny", "tiny": {"alphabet": ALPHABET, "hidden_size": 64, "num_layers": 2, "num_heads": 4,
                                       "intermediate_size": 128, "max_positions": 1024}}
    stages = [{"stage": "sft", "id": "sft", "model": tiny, "dataset": balanced, "batch_size": 16, "epochs": 4,
               "lr": 3e-3, "progress": False}]
    stages += [rl_stage(i, recipe, data, steps, lr) for i, recipe in enumerate(RECIPES.values())]
    stages.append({"stage": "moderation_evaluate", "id": "evaluate", "dataset": data, "progress": False,
                   "sampling": {"top_k": 1, "max_new_tokens": 80, "prompt_batch_size": 40},
                   "constraint": "verdict_close", "bootstrap_samples": 100,
                   "variants": [{"name": "SFT start", "stage": "sft", "chat_template": False}] + [
                       {"name": name, "stage": f"rl{i}", "chat_template": False} for i, name in enumerate(RECIPES)]})
    config = resolve_config({"run_name": f"seed{seed}", "output_dir": str(folder), "seed": seed, "stages": stages})
    outputs = run_pipeline(config, echo=lambda m: None)
    report = json.loads((config.run_dir / "evaluate" / "report.json").read_text())
    stops = {name: outputs[f"rl{i}"].get("stopped_at_step") for i, name in enumerate(RECIPES)}
    gold = [json.loads(line)["label"] for line in Path(data["params"]["data_files"]["test"]).read_text().splitlines()]
    return {"rows": report["rows"], "stops": stops, "gold": gold}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/moderation_recipe_ablation")
    parser.add_argument("--steps", type=int, default=20, help="RL steps of every recipe (the pack learning test's)")
    parser.add_argument("--lr", type=float, default=3e-4, help="RL learning rate of every recipe (the test's)")
    args = parser.parse_args(argv)
    results = {seed: run_seed(Path(args.out), seed, args.steps, args.lr) for seed in args.seeds}
    names = ["SFT start", *RECIPES]
    print("| recipe | macro-F1 per seed | mean | top label share (mean) | stopped by the guard |")
    print("|---|---|---|---|---|")
    for name in names:
        scores = [results[s]["rows"][name]["macro_f1"] for s in args.seeds]
        shares = [max(Counter(results[s]["rows"][name]["predictions"]).values()) /
                  len(results[s]["rows"][name]["predictions"]) for s in args.seeds]
        stops = [results[s]["stops"].get(name) for s in args.seeds]
        stopped = ", ".join(f"seed {s}: step {t}" for s, t in zip(args.seeds, stops) if t) or "-"
        print(f"| {name} | {' / '.join(f'{x:.3f}' for x in scores)} | {statistics.fmean(scores):.3f} | "
              f"{statistics.fmean(shares):.2f} | {stopped} |")
    print("\nPaired macro-F1 differences against the plain recipe on the same test examples (bootstrap over examples):\n")
    print("| recipe - plain | " + " | ".join(f"seed {s}" for s in args.seeds) + " |")
    print("|---|" + "---|" * len(args.seeds))
    for name in names[2:]:
        cells = []
        for s in args.seeds:
            rows, gold = results[s]["rows"], results[s]["gold"]
            labels = sorted(set(gold))
            paired = paired_metric_bootstrap(gold, rows[names[1]]["predictions"], rows[name]["predictions"],
                                             lambda pred, g: macro_f1(pred, g, labels), 1000)
            cells.append(f"{paired['difference']:+.3f} [{paired['ci95'][0]:+.3f}, {paired['ci95'][1]:+.3f}]")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
