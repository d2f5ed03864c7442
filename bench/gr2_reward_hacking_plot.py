"""Identity-copy rate and NDCG of the rollouts per RL step, naive vs conditional reward.

    python bench/gr2_reward_hacking_plot.py runs/gr2_reward_hacking --out docs/results/gr2_reward_hacking.png

Reads the two rl stages' history.json (examples/gr2_reward_hacking.yaml), draws one panel per
metric and prints the means over the first and last five steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

STAGES = {"naive reward": "rl_naive_copy", "conditional reward": "rl_conditional_copy"}
METRICS = {"metric/identity_copy": "copies the input order (valid rollouts)", "metric/ndcg": "NDCG of the rollouts"}


def series(run_dir: Path, stage: str, metric: str) -> list[float]:
    history = json.loads((run_dir / stage / "history.json").read_text())
    return [h.get(metric, float("nan")) for h in history]


def window_mean(values: list[float]) -> float:
    present = [v for v in values if v == v]
    return statistics.fmean(present) if present else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(10, 3.8))
    print("| reward | metric | steps 1-5 | last 5 steps |\n|---|---|---|---|")
    for ax, (metric, label) in zip(axes, METRICS.items()):
        for name, stage in STAGES.items():
            values = series(args.run_dir, stage, metric)
            ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
            print(f"| {name} | {metric} | {window_mean(values[:5]):.3f} | {window_mean(values[-5:]):.3f} |")
        ax.set_ylim(-0.02, 1.02)  # both are rates in [0, 1]
        ax.set_xlabel("RL step")
        ax.set_title(label)
        ax.legend(fontsize=8)
    fig.tight_layout()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=120)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
