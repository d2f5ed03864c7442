"""How well does the rule-based teacher rank on its own? NDCG@5 of its noise-free order on a
run's test lists, for several weights of its prior on the pre-ranker's order, against the
pre-ranker. SFT imitates this teacher, so its score bounds what imitation can reach.

    python bench/gr2_teacher_quality.py runs/gr2_ml100k_quick
    python bench/gr2_teacher_quality.py runs/gr2_ml100k_quick --prior-weights 0 0.3 1 4

The teacher reads the test lists' teacher prompts (no target shown), exactly as in a run.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from reasonrl.gr2_plugins.metrics import ndcg_at
from reasonrl.gr2_plugins.parsing import parse_ranking
from reasonrl.gr2_plugins.taste_teacher import TasteProfileTeacher, TasteTeacherParams


def teacher_ndcg(lists: list[dict], prior_weight: float, k: int = 5) -> float:
    teacher = TasteProfileTeacher(TasteTeacherParams(temperature=0.0, prior_weight=prior_weight))
    scores = []
    for row in lists:
        parsed = parse_ranking(teacher.sample(row["teacher_prompt"]), row["candidates"])
        if not parsed.valid:
            raise SystemExit(f"the teacher's answer for user {row['user']} does not parse: {parsed.error}")
        scores.append(ndcg_at(parsed.order.index(row["target_index"]) + 1, k))
    return statistics.fmean(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run with a gr2_prepare stage called 'prepare'")
    parser.add_argument("--prior-weights", type=float, nargs="+", default=[0.0, 0.3, 1.0, 2.0, 4.0])
    args = parser.parse_args()
    path = args.run_dir / "prepare" / "test.jsonl"
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run the pipeline's prepare stage first")
    lists = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    pre_ranker = statistics.fmean(ndcg_at(row["target_index"] + 1, 5) for row in lists)
    default = TasteTeacherParams().prior_weight
    print(f"NDCG@5 on {len(lists)} test lists of {args.run_dir}\n")
    print("| ranker | NDCG@5 |\n|---|---|")
    print(f"| pre-ranker (input order) | {pre_ranker:.4f} |")
    for weight in args.prior_weights:
        note = " (the default)" if weight == default else ""
        print(f"| taste_profile teacher, no noise, prior_weight {weight:g}{note} | {teacher_ndcg(lists, weight):.4f} |")


if __name__ == "__main__":
    main()
