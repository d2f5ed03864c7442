"""The ``tfidf_baseline`` stage: a reasoning-free classifier so LLM numbers have a floor."""

from __future__ import annotations

from typing import Any, Callable

from pydantic import Field

from reasonrl.core.config import DatasetRef
from reasonrl.core.contracts import StageContext
from reasonrl.core.io import atomic_write_json
from reasonrl.core.registry import Params
from reasonrl.moderation_plugins.metrics import accuracy, expected_calibration_error, macro_f1, pr_auc, roc_auc


class BaselineParams(Params):
    """The reasoning-free floor: TF-IDF features and logistic regression."""

    dataset: DatasetRef
    """the moderation dataset (train fits, test scores)"""
    max_features: int = Field(50_000, gt=0)
    """vocabulary size of the TF-IDF vectoriser"""
    ngram_max: int = Field(2, ge=1, le=3)
    """longest word n-gram used as a feature"""
    c: float = Field(4.0, gt=0, description="inverse regularisation strength")
    max_train: int | None = Field(None, gt=0, description="train on the first N examples (data-efficiency ladders)")


def classification_report(gold: list[str], predicted: list[str], positive_scores: list[float] | None,
                          labels: list[str], confidences: list[float] | None = None) -> dict[str, float]:
    """accuracy, macro-F1 and, for two labels, ROC-AUC / PR-AUC of the last label; ECE from confidences."""
    report = {"accuracy": accuracy(predicted, gold), "macro_f1": macro_f1(predicted, gold, labels)}
    if positive_scores is not None and len(labels) == 2:
        positives = [g == labels[-1] for g in gold]
        report["roc_auc"] = roc_auc(positive_scores, positives)
        report["pr_auc"] = pr_auc(positive_scores, positives)
    if confidences is not None:
        report["ece"] = expected_calibration_error(confidences, [p == g for p, g in zip(predicted, gold)])
    return report


class TfidfBaseline:
    def __init__(self, params: BaselineParams) -> None:
        self.params = params

    def run(self, context: StageContext) -> dict[str, Any]:
        p = self.params
        splits = context.build(p.dataset).splits()
        train = splits["train"][: p.max_train]
        summary: dict[str, Any] = {"train_examples": len(train)}
        predictions: dict[str, list[str]] = {}
        classify = fit_tfidf(train, p.max_features, p.ngram_max, p.c)
        for split in ("validation", "test"):
            rows = splits.get(split) or []
            if not rows:
                continue
            predicted, report = classify(rows)
            summary.update({f"{split}/{k}": v for k, v in report.items()})
            predictions[split] = predicted
        atomic_write_json(context.stage_dir / "metrics.json", summary)
        # per-example labels: evaluation stages compare other classifiers with this one on the same examples
        atomic_write_json(context.stage_dir / "predictions.json", predictions)
        return summary


def fit_tfidf(train: list[dict], max_features: int, ngram_max: int, c: float,
              ) -> Callable[[list[dict]], tuple[list[str], dict[str, float]]]:
    """TF-IDF + logistic regression fit on ``train``; returns a function giving the labels it
    predicts for other examples and their classification report."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    labels = train[0]["labels"]
    vectorizer = TfidfVectorizer(max_features=max_features, ngram_range=(1, ngram_max), sublinear_tf=True)
    features = vectorizer.fit_transform([e["content"] for e in train])
    model = LogisticRegression(C=c, max_iter=2000).fit(features, [e["label"] for e in train])
    classes = list(model.classes_)

    def classify(rows: list[dict]) -> tuple[list[str], dict[str, float]]:
        probs = model.predict_proba(vectorizer.transform([e["content"] for e in rows]))
        predicted = [classes[i] for i in probs.argmax(1)]
        positive = [float(row[classes.index(labels[-1])]) for row in probs] if labels[-1] in classes else None
        report = classification_report([e["label"] for e in rows], predicted, positive, labels,
                                       [float(row.max()) for row in probs])
        return predicted, report

    return classify
