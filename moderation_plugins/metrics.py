"""Classification metrics, small enough to check by hand; each equals scikit-learn's on the same
inputs, ties and constant scores included (tests/moderation/test_metrics_and_parsing.py)."""

from __future__ import annotations

import re
from typing import Sequence


def accuracy(predicted: Sequence[str | None], gold: Sequence[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold)) / max(len(gold), 1)


def macro_f1(predicted: Sequence[str | None], gold: Sequence[str], labels: Sequence[str]) -> float:
    """Mean over labels of F1; an unparseable prediction (None) counts as wrong."""
    scores = []
    for label in labels:
        tp = sum(p == label and g == label for p, g in zip(predicted, gold))
        fp = sum(p == label and g != label for p, g in zip(predicted, gold))
        fn = sum(p != label and g == label for p, g in zip(predicted, gold))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(scores) / max(len(scores), 1)


def roc_auc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    pos = [s for s, y in zip(scores, positives) if y]
    neg = [s for s, y in zip(scores, positives) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def pr_auc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """Average precision, tie-aware: sum over distinct score thresholds (highest first) of
    (recall gained at the threshold) x (precision at it). Examples with equal scores enter
    together, so the order of the input does not matter; constant scores give the share of
    positives. Equals scikit-learn's ``average_precision_score``."""
    total_positive = sum(bool(y) for y in positives)
    if not total_positive:
        return float("nan")
    by_score: dict[float, list[int]] = {}
    for score, positive in zip(scores, positives):
        by_score.setdefault(score, [0, 0])[bool(positive)] += 1
    true_pos = seen = 0
    average = 0.0
    for score in sorted(by_score, reverse=True):
        negatives, positives_here = by_score[score]
        true_pos += positives_here
        seen += negatives + positives_here
        average += positives_here / total_positive * (true_pos / seen)
    return average


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """sum_b |B_b| / n * |accuracy(B_b) - confidence(B_b)| over equal-width confidence bins."""
    n = len(confidences)
    if n == 0:
        return float("nan")
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidences) if (lo < c <= hi) or (b == 0 and c == 0)]
        if members:
            acc = sum(correct[i] for i in members) / len(members)
            conf = sum(confidences[i] for i in members) / len(members)
            total += len(members) / n * abs(acc - conf)
    return total


def paired_metric_bootstrap(gold: Sequence[str], baseline: Sequence[str | None], variant: Sequence[str | None],
                            metric, samples: int = 1000, seed: int = 0) -> dict[str, float]:
    """``metric(predicted, gold)`` of variant minus baseline on the same examples, with a
    percentile bootstrap 95% interval: examples are resampled jointly for both, so a metric
    that does not average over examples (macro-F1) is recomputed on each resample."""
    import random

    if not (len(gold) == len(baseline) == len(variant)) or not gold:
        raise ValueError(f"paired_metric_bootstrap needs equally long, non-empty predictions; got {len(gold)}, "
                         f"{len(baseline)} and {len(variant)}")
    rng = random.Random(seed)
    n = len(gold)
    differences = []
    for _ in range(samples):
        pick = [rng.randrange(n) for _ in range(n)]
        g = [gold[i] for i in pick]
        differences.append(metric([variant[i] for i in pick], g) - metric([baseline[i] for i in pick], g))
    differences.sort()
    return {"difference": metric(list(variant), list(gold)) - metric(list(baseline), list(gold)),
            "ci95": (differences[int(0.025 * samples)], differences[min(samples - 1, int(0.975 * samples))]),
            "examples": n}


# a stated proxy for made-up reasons: the substantive words of a reasoning, and where they come from
STOPWORDS = frozenset("""about above after again against because been before being below between both could does
doing down during each from further have having here into itself just more most much must only other over same
should some such than that their them then there these they this those through under until very what when where
which while whom with would your yours content label policy probability reason reasoning therefore""".split())
WORD = re.compile(r"[a-z]{4,}")


def substantive_words(text: str) -> list[str]:
    """Lowercase words of 4+ letters that are not function words (or the answer format's own words)."""
    return [w for w in WORD.findall(text.lower()) if w not in STOPWORDS]


def reasoning_grounding(reasoning: str, content: str, prompt: str) -> dict[str, float | None]:
    """``grounded_words``: the share of the reasoning's substantive words found in the prompt
    (policy, instructions and content); words from nowhere suggest invented reasons. None for a
    reasoning without such words. ``cites_content``: 1 when the reasoning uses a word of the
    content that the rest of the prompt does not contain, i.e. it talks about this content."""
    words = substantive_words(reasoning)
    if not words:
        return {"grounded_words": None, "cites_content": 0.0}
    prompt_words, content_words = set(substantive_words(prompt)), set(substantive_words(content))
    rest = set(substantive_words(prompt.replace(content, " "))) if content else prompt_words
    return {"grounded_words": sum(w in prompt_words for w in words) / len(words),
            "cites_content": float(any(w in content_words and w not in rest for w in words))}
