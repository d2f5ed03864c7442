"""Ranking metrics with one relevant item per list (IDCG = 1), and bootstrap intervals."""

from __future__ import annotations

import math
import random
from typing import Sequence


def rank_of(ranking: Sequence, target) -> int | None:
    """1-based position of target, or None when absent."""
    try:
        return list(ranking).index(target) + 1
    except ValueError:
        return None


def recall_at(rank: int | None, k: int) -> float:
    return 1.0 if rank is not None and rank <= k else 0.0


def ndcg_at(rank: int | None, k: int) -> float:
    """1 / log2(1 + rank) when the single relevant item is within the top k."""
    return 1.0 / math.log2(1 + rank) if rank is not None and rank <= k else 0.0


def ranking_metrics(rankings: Sequence[Sequence], targets: Sequence, ks=(1, 3, 5, 10)) -> dict[str, float]:
    """Mean recall@K and ndcg@K; an unparseable output (None) scores 0 everywhere."""
    ranks = [rank_of(r, t) if r is not None else None for r, t in zip(rankings, targets)]
    out = {}
    for k in ks:
        out[f"recall@{k}"] = sum(recall_at(r, k) for r in ranks) / max(len(ranks), 1)
        out[f"ndcg@{k}"] = sum(ndcg_at(r, k) for r in ranks) / max(len(ranks), 1)
    return out


def chance_metrics(size: int, ks: Sequence[int] = (1, 3, 5, 10)) -> dict[str, float]:
    """Exact expected Recall@K and NDCG@K of a uniformly random order of ``size`` candidates
    holding one relevant item: each position has probability 1 / size."""
    out = {}
    for k in ks:
        top = min(k, size)
        out[f"recall@{k}"] = top / size
        out[f"ndcg@{k}"] = sum(1.0 / math.log2(1 + r) for r in range(1, top + 1)) / size
    return out


def bootstrap_interval(values: Sequence[float], samples: int = 1000, level: float = 0.95, seed: int = 0):
    """Percentile bootstrap interval of the mean."""
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    lo = means[int((1 - level) / 2 * samples)]
    hi = means[min(samples - 1, int((1 + level) / 2 * samples))]
    return (lo, hi)


def paired_bootstrap(baseline: Sequence[float], variant: Sequence[float], samples: int = 1000, level: float = 0.95,
                     seed: int = 0, strata: Sequence | None = None) -> dict[str, float]:
    """Mean of ``variant - baseline`` over the same lists, its percentile bootstrap interval
    (lists resampled jointly, so list difficulty cancels) and the share of resamples <= 0.

    ``strata`` (one label per list, e.g. the training seed) resamples lists within each stratum,
    so every resample keeps each seed's share of the lists."""
    if len(baseline) != len(variant) or not baseline:
        raise ValueError(f"paired_bootstrap needs two equally long, non-empty lists; got {len(baseline)} and "
                         f"{len(variant)} values")
    differences = [v - b for b, v in zip(baseline, variant)]
    groups: dict = {}
    for index, label in enumerate(strata if strata is not None else [0] * len(differences)):
        groups.setdefault(label, []).append(differences[index])
    rng = random.Random(seed)
    n = len(differences)
    means = sorted(sum(sum(g[rng.randrange(len(g))] for _ in g) for g in groups.values()) / n for _ in range(samples))
    return {"difference": sum(differences) / n, "ci95": (means[int((1 - level) / 2 * samples)],
                                                          means[min(samples - 1, int((1 + level) / 2 * samples))]),
            "share_at_or_below_zero": sum(m <= 0 for m in means) / samples, "lists": n}


def identity_copy_rate(outputs: Sequence[Sequence | None], inputs: Sequence[Sequence]) -> float:
    """Share of valid outputs that return the input order unchanged."""
    pairs = [(o, i) for o, i in zip(outputs, inputs) if o is not None]
    return sum(list(o) == list(i) for o, i in pairs) / max(len(pairs), 1)


class RankingMetric:
    """recall@K and ndcg@K over ranked lists with one relevant item each."""

    def __init__(self, params=None) -> None:
        self.params = params

    def __call__(self, predictions, references) -> dict[str, float]:
        return ranking_metrics(predictions, references)
