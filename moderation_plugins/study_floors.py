"""The trivial rows of a moderation ladder: what a constant answer and a reasoning-free
classifier score on the same evaluation examples, so a curve is read against its floors."""

from __future__ import annotations

from collections import Counter
from typing import Any

from reasonrl.moderation_plugins.baseline import BaselineParams, classification_report, fit_tfidf


def majority_floor(train: list[dict], evaluated: list[dict], metric: str) -> dict[str, Any] | None:
    """Always the training examples' most common label (ties: the label listed first)."""
    labels = evaluated[0]["labels"]
    counts = Counter(e["label"] for e in train)
    label = max(labels, key=lambda name: counts[name])
    gold = [e["label"] for e in evaluated]
    report = classification_report(gold, [label] * len(gold), [0.5] * len(gold), labels)
    if metric not in report:
        return None
    return {"label": label, "share": sum(g == label for g in gold) / len(gold), "score": report[metric]}


def tfidf_floor(train: list[dict], evaluated: list[dict], metric: str) -> float | None:
    """TF-IDF + logistic regression fit on ``train`` (the tfidf_baseline stage's defaults)."""
    if len({e["label"] for e in train}) < 2:
        return None  # one label only: logistic regression has nothing to separate
    defaults = {name: BaselineParams.model_fields[name].default for name in ("max_features", "ngram_max", "c")}
    _, report = fit_tfidf(train, **defaults)(evaluated)
    return report.get(metric)


def ladder_floors(splits: dict[str, list[dict]], axis: str, values: list[int], eval_split: str,
                  eval_examples: int | None, metric: str) -> dict[str, Any]:
    """The majority label and TF-IDF on the full training split, and on an examples ladder TF-IDF
    fit on each rung's first n training examples (the examples that rung's models train on)."""
    train, evaluated = splits["train"], splits[eval_split][:eval_examples]
    floors: dict[str, Any] = {"majority": majority_floor(train, evaluated, metric),
                              "tfidf_all": tfidf_floor(train, evaluated, metric), "train_examples": len(train)}
    if axis == "examples":
        floors["tfidf_per_rung"] = {str(n): tfidf_floor(train[:n], evaluated, metric) for n in values}
    return floors


def floor_rows(floors: dict[str, Any], values: list[int]) -> list[tuple[str, list[str]]]:
    """(row name, one cell per rung) for the floors, in the ladder's column order."""
    def cells(score_at) -> list[str]:
        return ["-" if score_at(v) is None else f"{score_at(v):.4f}" for v in values]

    if not floors:
        return []
    rows = []
    majority = floors.get("majority")
    if majority:
        rows.append((f"majority label (always {majority['label']}, {majority['share']:.0%} of these)",
                     cells(lambda v: majority["score"])))
    per_rung = floors.get("tfidf_per_rung")
    if per_rung:
        rows.append(("TF-IDF + logistic regression on the same n", cells(lambda v: per_rung.get(str(v)))))
    rows.append((f"TF-IDF + logistic regression on all {floors['train_examples']} training examples",
                 cells(lambda v: floors.get("tfidf_all"))))
    return rows
