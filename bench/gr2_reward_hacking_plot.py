"""Identity-copy rate, kept-first share and NDCG of the rollouts per RL step, naive vs conditional reward.

    python bench/gr2_reward_hacking_plot.py runs/gr2_reward_hacking --out docs/results/gr2_reward_hacking.png

Reads the two rl stages' history.json (examples/gr2_reward_hacking.yaml), draws one panel per
metric and prints the means over the first and last five steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from rl_curves import plot_curves  # noqa: E402

STAGES = {"naive reward": "rl_naive_copy", "conditional reward": "rl_conditional_copy"}
METRICS = {"metric/identity_copy": "copies the input order (valid rollouts)",
           "metric/kept_first": "keeps the input's first item first",
           "metric/ndcg": "NDCG of the rollouts"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    print(plot_curves(args.run_dir, STAGES, METRICS, args.out, rates=True))
    if args.out:
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
