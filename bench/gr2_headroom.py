"""How much better than its pre-ranker can a reranker of these lists get?

Builds the same leak-free lists `gr2_prepare` builds (each list's statistics fit on every
user's sequence cut where that list's target sits), fits two learned rankers on the
training lists' candidate features (`reasonrl.gr2_plugins.features.FEATURES`): a logistic
regression (scikit-learn) and LambdaMART (LightGBM), and scores NDCG@5 on the validation and
test lists that hold their target, against the pre-ranker's order and chance, with paired
bootstrap intervals and the number of lists a gain that size needs (80% power, two-sided 5%).

    python bench/gr2_headroom.py --dataset movielens_1m          # about 3 minutes on 2 cores
    python bench/gr2_headroom.py --dataset movielens_100k
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys

import numpy as np

from reasonrl.gr2_plugins.data import leave_one_out, load_movielens
from reasonrl.gr2_plugins.features import FEATURES
from reasonrl.gr2_plugins.metrics import chance_metrics, ndcg_at, paired_bootstrap
from reasonrl.gr2_plugins.prepare import GR2Prepare, GR2PrepareParams, fit_evidence_model


def build(dataset: str, train_targets: int, path: str | None = None) -> dict:
    data = load_movielens(dataset, path).k_core(5)
    splits = leave_one_out(data.sequences, data.times)
    catalog = sorted({i for s in splits.values() for i in s.sequence})
    items = {i: {"genres": data.items[i].genres, "year": data.items[i].year} for i in catalog}
    prepare = GR2Prepare(GR2PrepareParams(dataset=dataset, train_targets_per_user=train_targets))
    return prepare.build_lists(splits, catalog, items)


def matrix(examples: list[dict]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    x = np.array([row for e in examples for row in e["features"]], dtype=np.float64)
    y = np.array([float(i == e["target_index"]) for e in examples for i in range(len(e["features"]))])
    return x, y, [len(e["features"]) for e in examples]


def fit_logistic(train: list[dict]):
    """The ``feature_ranker`` teacher's own model, fit as ``gr2_prepare`` fits it."""
    return fit_evidence_model({"examples": train}).scores


def fit_lambdamart(train: list[dict], seed: int = 0):
    import lightgbm

    x, y, groups = matrix(train)
    model = lightgbm.LGBMRanker(objective="lambdarank", n_estimators=300, learning_rate=0.05, num_leaves=31,
                                min_child_samples=50, subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
                                random_state=seed, verbose=-1)
    model.fit(x, y, group=groups, eval_at=[5])
    return lambda features: model.predict(np.asarray(features))


def co_watching_rule(features) -> list[float]:
    """The ``feature_ranker`` teacher's ``co_watching`` order: the three candidates most watched
    right after the last film (a count above 0) first, the rest in input order."""
    counts = [f[FEATURES.index("log_after_last")] for f in features]
    leaders = [i for i in sorted(range(len(counts)), key=lambda i: (-counts[i], i))[:3] if counts[i] > 0]
    scores = [0.0] * len(counts)
    for place, i in enumerate(leaders):
        scores[i] = 3.0 - place
    return scores


def ndcg5(examples: list[dict], scorer=None) -> list[float]:
    """NDCG@5 per list: the input order, or the order of ``scorer``'s scores (input order breaks ties)."""
    out = []
    for e in examples:
        if scorer is None:
            rank = e["target_index"] + 1
        else:
            scores = scorer(e["features"])
            order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
            rank = order.index(e["target_index"]) + 1
        out.append(ndcg_at(rank, 5))
    return out


def lists_needed(differences: list[float]) -> float:
    mean = statistics.fmean(differences)
    spread = statistics.stdev(differences)
    return math.inf if mean == 0 else ((1.96 + 0.8416) * spread / mean) ** 2


def table(split: str, examples: list[dict], scorers: dict) -> list[str]:
    base = ndcg5(examples)
    lines = [f"\n### {split}: {len(examples)} lists holding their target\n",
             "| ranker | NDCG@5 | - pre-ranker [95% CI] | lists needed to show it |", "|---|---|---|---|",
             f"| chance (exact expectation) | {chance_metrics(len(examples[0]['features']))['ndcg@5']:.4f} | | |",
             f"| pre-ranker (input order) | {statistics.fmean(base):.4f} | | |"]
    for name, scorer in scorers.items():
        mine = ndcg5(examples, scorer)
        paired = paired_bootstrap(base, mine, 1000)
        lo, hi = paired["ci95"]
        needed = lists_needed([m - b for m, b in zip(mine, base)])
        lines.append(f"| {name} | {statistics.fmean(mine):.4f} | {paired['difference']:+.4f} [{lo:+.4f}, {hi:+.4f}] "
                     f"| {needed:.0f} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movielens_1m", choices=["movielens_100k", "movielens_1m"])
    parser.add_argument("--train-targets", type=int, default=4, help="training lists per user")
    parser.add_argument("--path", default=None, help="a local folder with the ml-* files instead of fetching")
    args = parser.parse_args(argv)
    lists = build(args.dataset, args.train_targets, args.path)
    print(f"# Headroom over the pre-ranker: {args.dataset}\n")
    print("| split | lists holding their target | coverage | target's mean input position |\n|---|---|---|---|")
    for split, built in lists.items():
        ex = built["examples"]
        print(f"| {split} | {len(ex)} | {built['coverage']:.3f} | "
              f"{statistics.fmean(e['target_index'] + 1 for e in ex):.2f} |")
    train = lists["train"]["examples"]
    scorers = {"co-watching rule (the teacher's top 3)": co_watching_rule, "logistic regression": fit_logistic(train)}
    try:
        scorers["LambdaMART (LightGBM)"] = fit_lambdamart(train)
    except ImportError:
        print("\n(LambdaMART left out: pip install 'reasonrl[baselines]' brings lightgbm)")
    for split in ("validation", "test"):
        examples = lists[split]["examples"]
        print("\n".join(table(split, examples, scorers)))
        later = [e for e in examples if not e["same_second"]]
        if later and split == "test":
            print("\n".join(table("test, target in a later second than the last history item", later, scorers)))
    print(f"\nfeatures: {', '.join(FEATURES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
