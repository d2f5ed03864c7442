"""How much of the input order the policy keeps, per RL step, naive vs conditional reward.

    python bench/gr2_reward_hacking_plot.py runs/gr2_reward_hacking --out docs/results/gr2_reward_hacking.png

Reads the two rl stages' history.json (examples/gr2_reward_hacking.yaml), draws one panel per
logged metric and prints the means over the first and last five steps; then, on the
evaluation's test lists, each variant's share of answers that keep the input's first item
first and the mean Kendall tau between its order and the input order, and the paired
differences of both between every two variants on the same lists.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from rl_curves import plot_curves, series  # noqa: E402

STAGES = {"naive reward": "rl_naive_copy", "conditional reward": "rl_conditional_copy"}
METRICS = {"metric/identity_copy": "copies the input order (valid rollouts)",
           "metric/first_kept": "keeps the input's first item first",
           "metric/input_tau": "Kendall tau with the input order",
           "metric/ndcg": "NDCG of the rollouts"}


def logged(run_dir: Path, metric: str) -> bool:
    return any(v == v for stage in STAGES.values() for v in series(run_dir, stage, metric))


def test_list_behaviour(run_dir: Path, evaluation: str) -> dict[str, dict[str, dict]]:
    """variant -> user -> {first_kept, input_tau} on the evaluation's test lists (valid answers only)."""
    from reasonrl.gr2_plugins.parsing import parse_ranking
    from reasonrl.gr2_plugins.rewards import input_order_behaviour

    lists = {row["user"]: row for row in map(json.loads, (run_dir / "prepare" / "test.jsonl").open())}
    report = json.loads((run_dir / evaluation / "report.json").read_text())
    behaviour = {}
    for name in report["rows"]:
        path = run_dir / evaluation / f"outputs_{''.join(c if c.isalnum() else '_' for c in name)}.jsonl"
        if not path.exists():
            continue
        answers = {r["user"]: parse_ranking(r["output"], lists[r["user"]]["candidates"])
                   for r in map(json.loads, path.open())}
        behaviour[name] = {user: input_order_behaviour(p.order) for user, p in answers.items() if p.valid}
    return behaviour


def evaluated_order(run_dir: Path, evaluation: str) -> list[str]:
    """The evaluation's variant names in its config's order (the start first, then the RL runs)."""
    import yaml

    config = yaml.safe_load((run_dir / "config.resolved.yaml").read_text())
    stage = next(s for s in config["stages"] if s["id"] == evaluation)
    return [variant["name"] for variant in stage["variants"]]


def test_list_table(run_dir: Path, evaluation: str = "evaluate_copy") -> str:
    """First-item-kept share and mean input tau of every model variant on the test lists, then the
    paired differences (same lists) between every two variants, in the evaluation's order."""
    from reasonrl.gr2_plugins.metrics import paired_bootstrap

    behaviour = {name: rows for name, rows in test_list_behaviour(run_dir, evaluation).items() if rows}
    names = [name for name in evaluated_order(run_dir, evaluation) if name in behaviour]
    lines = ["| variant | valid answers | keeps the first item first | Kendall tau with the input order |",
             "|---|---|---|---|"]
    for name in names:
        rows = behaviour[name]
        lines.append(f"| {name} | {len(rows)} | {statistics.fmean(k['first_kept'] for k in rows.values()):.2f} | "
                     f"{statistics.fmean(k['input_tau'] for k in rows.values()):+.3f} |")
    pairs = [(base, variant) for i, base in enumerate(names) for variant in names[i + 1:]]
    if pairs:
        lines += ["", "| paired difference (same lists) | lists | keeps the first item first [95% CI] | "
                  "input tau [95% CI] |", "|---|---|---|---|"]
    for base, variant in pairs:
        users = sorted(set(behaviour[base]) & set(behaviour[variant]))
        cells = []
        for key in ("first_kept", "input_tau"):
            result = paired_bootstrap([float(behaviour[base][u][key]) for u in users],
                                      [float(behaviour[variant][u][key]) for u in users], samples=2000)
            cells.append(f"{result['difference']:+.3f} [{result['ci95'][0]:+.3f}, {result['ci95'][1]:+.3f}]")
        lines.append(f"| {variant} - {base} | {len(users)} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    metrics = {m: title for m, title in METRICS.items() if logged(args.run_dir, m)}
    print(plot_curves(args.run_dir, STAGES, metrics, args.out, rates=False))
    print("\n" + test_list_table(args.run_dir))
    if args.out:
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
