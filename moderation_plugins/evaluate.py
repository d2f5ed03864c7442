"""The ``moderation_evaluate`` stage: every variant classifies the same examples; one report.

Monte-Carlo score aggregation (``mc_samples`` > 1) averages the stated probability over k
sampled traces and takes the majority label, which is how a single generative classifier
gets a usable score for ROC/PR curves and calibration.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Sequence

from pydantic import Field, model_validator

from reasonrl.core.config import ConstraintRef, DatasetRef
from reasonrl.core.contracts import StageContext
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.io import read_json
from reasonrl.core.registry import Params
from reasonrl.moderation_plugins.baseline import classification_report
from reasonrl.moderation_plugins.metrics import macro_f1, paired_metric_bootstrap
from reasonrl.moderation_plugins.parsing import parse_verdict
from reasonrl.moderation_plugins.rewards import ReasoningGrounding
from reasonrl.moderation_plugins.scores import label_probabilities
from reasonrl.plugins.engine.manifest import DecodeSettings
from reasonrl.plugins.engine.generation import generate_samples
from reasonrl.plugins.engine.models import ModelSpec
from reasonrl.plugins.engine.rollout import SamplingParams
from reasonrl.plugins.evaluation import (
    VariantEvaluation,
    check_comparisons,
    load_model,
    paired_lines,
    report_table,
    write_outputs,
)


class EvalVariant(Params):
    name: str = Field(description="row label, e.g. 'RL (dapo, label + rubric)'")
    stage: str | None = Field(None, description="the training stage whose model classifies")
    model: ModelSpec | None = Field(None, description="or any model, e.g. the untrained packaged student")
    baseline_stage: str | None = Field(None, description="or a tfidf_baseline stage whose test numbers to show")
    chat_template: bool = True
    """wrap the prompt in the tokenizer's chat template"""
    sampling: SamplingParams | None = None
    """this row's decoding (default: the stage's ``sampling``), e.g. greedy and sampled rows of one model"""
    mc_samples: int | None = Field(None, ge=1, description="this row's k sampled traces per example "
                                   "(default: the stage's mc_samples); rows of one model and sampling "
                                   "take the first k of the same traces")

    @model_validator(mode="after")
    def _one_source(self):
        if sum(x is not None for x in (self.stage, self.model, self.baseline_stage)) != 1:
            raise ValueError(f"variant {self.name!r}: give exactly one of stage, model, baseline_stage")
        return self


class ModerationEvalParams(Params):
    dataset: DatasetRef
    """the moderation dataset to classify"""
    split: str = "test"
    """the dataset split to evaluate on"""
    variants: list[EvalVariant] = Field(min_length=1)
    """the rows of the report: trained stages, models or baselines"""
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(top_k=1, max_new_tokens=96))
    """decoding settings for every variant"""
    mc_samples: int = Field(1, ge=1, description="k sampled traces per example, probability averaged "
                            "(use temperature > 0 and top_k 0 in sampling)")
    max_examples: int | None = Field(None, gt=0)
    """evaluate only the first N examples (default: all)"""
    comparisons: list[tuple[str, str]] = Field(default_factory=list)
    """pairs of variant names [baseline, variant]: the report gives variant - baseline macro-F1 on the
    same examples with a paired bootstrap 95% interval"""
    bootstrap_samples: int = Field(1000, ge=10)
    """bootstrap resamples of the paired intervals"""

    @model_validator(mode="after")
    def _comparisons_name_variants(self):
        check_comparisons(self.variants, self.comparisons)
        return self
    title: str = "Moderation"
    """the report's title"""
    model_scores: bool = Field(True, description=(
        "also score each answer by the model's own probability of the labels where its verdict names them "
        "(roc_auc_model, pr_auc_model, ece_model; one forward pass per example); the stated probability's "
        "roc_auc stays beside them"))
    constraint: ConstraintRef | None = Field(None, description=(
        "a decoding constraint for every model row, e.g. verdict_close: the verdict always ends the answer"))
    progress: bool = True
    """show progress bars"""


COLUMNS = ["accuracy", "macro_f1", "roc_auc_model", "roc_auc", "pr_auc_model", "pr_auc", "ece_model", "ece",
           "parse_failure_rate", "cut_rate", "reasoning_words", "grounded_words", "cites_content"]


def aggregate_samples(samples: Sequence[str], labels: Sequence[str], cut: Sequence[bool] = ()) -> dict[str, Any]:
    """One example's verdict from k traces: majority label, mean positive-label probability, and
    the share of traces ``cut`` by the token budget.

    A trace with a label but no probability counts as 1.0 / 0.0 for the positive label; a
    trace without a label counts as 0.5 and does not vote.
    """
    parsed = [parse_verdict(s, labels) for s in samples]
    votes = Counter(v.label for v in parsed if v.label is not None)
    positive = labels[-1]
    probabilities = [v.probability if v.probability is not None else
                     (0.5 if v.label is None else float(v.label == positive)) for v in parsed]
    return {"label": votes.most_common(1)[0][0] if votes else None,
            "p_positive": sum(probabilities) / len(probabilities),
            "failures": sum(v.error is not None for v in parsed) / len(parsed),
            "cut": sum(cut) / len(cut) if cut else 0.0,
            "reasoning_words": sum(len(v.reasoning.split()) for v in parsed) / len(parsed)}


def classify_examples(model, tokenizer, examples: list[dict], sampling, samples: int = 1, seed: int = 0,
                      chat_template: bool = True, desc: str = "classify", progress: bool = True,
                      constraints=None) -> tuple[list[dict], Any]:
    """Each example's verdict (:func:`aggregate_samples`) and its ``samples`` traces, and the
    generations they come from."""

    generated = generate_samples(model, tokenizer, [e["prompt"] for e in examples], sampling, samples, seed=seed,
                                 chat_template=chat_template, desc=desc, progress=progress, constraints=constraints)
    return verdicts_from(generated, examples, samples), generated


def verdicts_from(generated, examples: list[dict], samples: int) -> list[dict]:
    """Each example's verdict from the first ``samples`` of its generated traces."""
    return [{**aggregate_samples(texts[:samples], e["labels"], cut[:samples]), **grounding(texts[:samples], e),
             "samples": texts[:samples]} for texts, cut, e in zip(generated.texts, generated.cut, examples)]


def grounding(texts: Sequence[str], example: dict) -> dict[str, float | None]:
    """The ``reasoning_grounding`` metric averaged over an example's traces (None where no trace has words)."""
    parts = ReasoningGrounding()([example.get("prompt", "")] * len(texts), texts, [example] * len(texts))
    return {key: mean_of([p[key] for p in parts]) for key in ("grounded_words", "cites_content")}


def mean_of(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def score_verdicts(examples: list[dict], verdicts: list[dict]) -> dict[str, Any]:
    labels = examples[0]["labels"]
    gold = [e["label"] for e in examples]
    predicted = [v["label"] for v in verdicts]
    p_pos = [v["p_positive"] for v in verdicts]
    # confidence in the predicted label: p for the positive label, 1 - p otherwise (binary tasks)
    confidence = [p if label == labels[-1] else 1 - p for p, label in zip(p_pos, predicted)] \
        if len(labels) == 2 else None
    report = classification_report(gold, predicted, p_pos, labels, confidence)
    report["parse_failure_rate"] = sum(v["failures"] for v in verdicts) / len(verdicts)
    report["cut_rate"] = sum(v.get("cut", 0.0) for v in verdicts) / len(verdicts)
    for key in ("grounded_words", "cites_content"):
        report[key] = mean_of([v.get(key) for v in verdicts])
    report["reasoning_words"] = sum(v["reasoning_words"] for v in verdicts) / len(verdicts)
    if confidence is not None:
        report["reliability"] = reliability_bins(confidence, [p == g for p, g in zip(predicted, gold)])
    return report


def majority_line(examples: list[dict]) -> str:
    """The trivial floor: the macro-F1 and accuracy of answering the split's most common label."""
    gold = [e["label"] for e in examples]
    label, count = Counter(gold).most_common(1)[0]
    f1 = macro_f1([label] * len(gold), gold, examples[0]["labels"])
    return f"\n\nMajority label (always {label}): macro-F1 {f1:.4f}, accuracy {count / len(gold):.4f}"


def answer_counts(rows: dict[str, dict[str, Any]]) -> str:
    """How many examples each row gave each label: a row that answers one label shows it here."""
    lines = [f"- {name}: " + ", ".join(f"{label} {n}" for label, n in sorted(Counter(
        "none" if p is None else p for p in row["predictions"]).items()))
        for name, row in rows.items() if row.get("predictions")]
    return ("\n\nAnswers per label:\n" + "\n".join(lines)) if lines else ""


def model_label_probabilities(model, tokenizer, examples: list[dict], generated,
                              chat_template: bool) -> list[list[float]] | None:
    """The model's label probabilities at the verdict of each example's first trace (binary tasks;
    None otherwise)."""
    from reasonrl.plugins.engine.models import chat_prompt

    if len(examples[0]["labels"]) != 2:
        return None
    prompts = [chat_prompt(tokenizer, e["prompt"], chat_template) for e in examples]
    return label_probabilities(model, tokenizer, prompts, [texts[0] for texts in generated.texts],
                               examples[0]["labels"])


def model_score_metrics(examples: list[dict], verdicts: list[dict], probabilities) -> dict[str, Any]:
    """ROC-AUC, PR-AUC and ECE from the model's own label probabilities (binary tasks), with the
    verdict's label as the prediction; empty when there are none."""
    if probabilities is None:
        return {}
    labels = examples[0]["labels"]
    p_pos = [p[-1] for p in probabilities]
    predicted = [v["label"] for v in verdicts]
    confidence = [p if label == labels[-1] else 1 - p for p, label in zip(p_pos, predicted)]
    report = classification_report([e["label"] for e in examples], predicted, p_pos, labels, confidence)
    return {"roc_auc_model": report["roc_auc"], "pr_auc_model": report["pr_auc"], "ece_model": report["ece"]}


def reliability_bins(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> list[dict]:
    out = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidence) if lo < c <= hi or (b == 0 and c == 0)]
        if members:
            out.append({"lo": lo, "hi": hi, "n": len(members),
                        "confidence": sum(confidence[i] for i in members) / len(members),
                        "accuracy": sum(correct[i] for i in members) / len(members)})
    return out


def markdown_table(title: str, rows: dict[str, dict[str, Any]], n: int) -> str:
    cells = {name: [f"{m[c]:.4f}" if isinstance(m.get(c), float) else "-" for c in COLUMNS] for name, m in rows.items()}
    return report_table(title, f"{n} examples", COLUMNS, cells)


def reliability_plot(path, rows: dict[str, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    for name, m in rows.items():
        bins = m.get("reliability")
        if bins:
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", label=name)
    ax.set_xlabel("stated confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability diagram")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class ModerationEvaluate(VariantEvaluation):
    bar_metrics = ("accuracy", "macro_f1", "roc_auc")
    best_metric = "macro_f1"

    def decode_settings(self, variant):
        if variant.stage is None:
            return None
        sampling = self.row_sampling(variant)
        return DecodeSettings(stage=variant.stage, chat_template=variant.chat_template, constraint=self.params.constraint,
                              max_new_tokens=sampling.max_new_tokens, prompt_batch_size=sampling.prompt_batch_size)

    def row_sampling(self, variant) -> SamplingParams:
        return variant.sampling or self.params.sampling

    def score_variant(self, context: StageContext, variant, examples: list[dict]) -> dict[str, Any]:
        if variant.baseline_stage:
            return self.baseline_row(context, variant.baseline_stage)
        return self.model_row(context, variant, examples)

    def report(self, context: StageContext, rows, examples):
        p = self.params
        reliability_plot(context.stage_dir / "reliability.png", rows)
        comparisons, paired = self.comparisons(rows, examples)
        payload = {"title": p.title, "examples": len(examples), "split": p.split, "rows": rows,
                   "comparisons": comparisons}
        return payload, (markdown_table(p.title, rows, len(examples)) + majority_line(examples) + answer_counts(rows)
                         + paired)

    def comparisons(self, rows, examples) -> tuple[list[dict[str, Any]], str]:
        """Paired differences in macro-F1 between variants on the same examples."""
        p = self.params
        gold, labels = [e["label"] for e in examples], examples[0]["labels"]
        results = []
        for baseline, variant in p.comparisons:
            missing = [name for name in (baseline, variant) if rows[name].get("predictions") is None]
            if missing:
                raise ReasonRLError(f"comparisons: variant {missing[0]!r} has no per-example predictions (a "
                                    f"tfidf_baseline stage from an older version); rerun that stage")
            result = paired_metric_bootstrap(gold, rows[baseline]["predictions"], rows[variant]["predictions"],
                                             lambda pred, g: macro_f1(pred, g, labels), p.bootstrap_samples)
            results.append({"baseline": baseline, "variant": variant, **result})
        return results, paired_lines(results, "macro-F1", "examples")

    def summary_rows(self, rows):
        return {k: {c: v.get(c) for c in COLUMNS} for k, v in rows.items()}

    def baseline_row(self, context: StageContext, stage: str) -> dict[str, Any]:
        metrics = read_json(context.run_dir / stage / "metrics.json")
        prefix = f"{self.params.split}/"
        row = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}
        predictions = context.run_dir / stage / "predictions.json"
        if predictions.exists():
            row["predictions"] = read_json(predictions).get(self.params.split)
        return row

    def run(self, context: StageContext) -> dict[str, Any]:
        self.traces: dict[str, Any] = {}  # generations shared by rows of one model and decoding
        self.model_scores: dict[str, Any] = {}  # the model's label probabilities on each key's first traces
        return super().run(context)

    def trace_key(self, variant) -> str:
        """Rows with the same key decode the same way from the same model, so they share traces."""
        source = variant.stage or variant.model.model_dump_json()
        return json.dumps([source, self.row_sampling(variant).model_dump(mode="json"), variant.chat_template])

    def model_row(self, context: StageContext, variant, examples: list[dict]) -> dict[str, Any]:
        p = self.params
        key, samples = self.trace_key(variant), variant.mc_samples or p.mc_samples
        if key not in self.traces:
            # the most traces any row of this key asks for, drawn once: a k = 1, 5, 10 ladder costs one
            # pass at k = 10 and its rows are nested, so their comparison is paired
            most = max(v.mc_samples or p.mc_samples for v in p.variants
                       if v.baseline_stage is None and self.trace_key(v) == key)
            model, tokenizer = load_model(variant.stage or variant.model, context.run_dir)
            desc = f"eval {variant.name}" + (f" ({most} traces per example, shared)" if most > 1 else "")
            rule = context.build(p.constraint) if p.constraint is not None else None
            constraints = None if rule is None else [rule.for_example(tokenizer, e) for e in examples]
            self.traces[key] = generate_samples(model, tokenizer, [e["prompt"] for e in examples],
                                                self.row_sampling(variant), most, seed=context.seed,
                                                chat_template=variant.chat_template, desc=desc, progress=p.progress,
                                                constraints=constraints)
            self.model_scores[key] = self.score_with_model(model, tokenizer, variant, examples, self.traces[key])
        verdicts = verdicts_from(self.traces[key], examples, samples)
        # "label" is the verdict's; the example's own label is kept as "gold" (the verdict used to overwrite it)
        outputs = [{"id": e.get("id"), "gold": e["label"], **v} for e, v in zip(examples, verdicts)]
        write_outputs(context.stage_dir, variant.name, outputs)
        row = {**score_verdicts(examples, verdicts), "predictions": [v["label"] for v in verdicts]}
        return {**row, **model_score_metrics(examples, verdicts, self.model_scores.get(key))}

    def score_with_model(self, model, tokenizer, variant, examples, generated) -> list[list[float]] | None:
        if not self.params.model_scores:
            return None
        return model_label_probabilities(model, tokenizer, examples, generated, variant.chat_template)
