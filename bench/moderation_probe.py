"""What the untrained student's features hold about a moderation label: one table per task.

A training-free ceiling check before a long run. The frozen student reads each prompt
(instructions, policy, content) up to ``Label: ``; its last hidden state at that position is
the representation every label decision starts from. A logistic-regression probe fit on those
vectors for the training split and scored on the test split says how much of the label a
linear read-out can find there. Beside it, on the same test examples: the majority label, the
zero-shot label margin (the probe's own position, no training), and TF-IDF + logistic
regression fit on the same training examples, also on the first n of them (a small-data ladder).
Macro-F1 differences are paired bootstraps.

    python bench/moderation_probe.py
    python bench/moderation_probe.py --tasks prompt_injection --train-sizes 16,32,64
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from reasonrl.core.manager import get_registry
from reasonrl.moderation_plugins.baseline import fit_tfidf
from reasonrl.moderation_plugins.metrics import macro_f1, paired_metric_bootstrap, roc_auc
from reasonrl.plugins.engine.models import ModelSpec, chat_prompt, load_policy

TASKS = ("prompt_injection", "harmful_response", "spam_email")


def decision_inputs(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each chat-formatted prompt followed by ``Label: ``: where the label is read."""
    texts = [chat_prompt(tokenizer, prompt, True) + "Label: " for prompt in prompts]
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


def decision_features(model, tokenizer, prompts: list[str], labels: list[str], batch_size: int = 8,
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(last-layer hidden state at the final prompt token, zero-shot margin log p(last label) -
    log p(first label) over the labels' first tokens), one row per prompt. Batches are left-padded
    so the final position is every row's own last token."""
    first = [tokenizer(label, add_special_tokens=False)["input_ids"][0] for label in labels]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    features, margins = [], []
    inputs = decision_inputs(tokenizer, prompts)
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start:start + batch_size]
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(row)) + row for row in batch])
        mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in batch])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True)
        features.append(out.hidden_states[-1][:, -1].float().numpy())
        logprobs = out.logits[:, -1].float().log_softmax(-1)
        margins.append((logprobs[:, first[-1]] - logprobs[:, first[0]]).numpy())
    return np.concatenate(features), np.concatenate(margins)


def fit_probe(features: np.ndarray, gold: list[str], seed: int = 0):
    """Standardised features, L2 logistic regression with C picked by (up to) 5-fold CV on the
    training examples; class-balanced, so a label's share alone does not decide the answers."""
    fewest = min(gold.count(label) for label in set(gold))
    if len(set(gold)) < 2 or fewest < 2:
        raise ValueError(f"a probe needs at least 2 training examples of each of 2 labels to pick its C by "
                         f"cross-validation; got {dict(Counter(gold))}. Fix: a larger n in --train-sizes")
    folds = min(5, fewest)
    probe = make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=np.logspace(-4, 1, 11), cv=folds, class_weight="balanced", max_iter=5000, random_state=seed))
    return probe.fit(features, gold)


def task_split(task: str, max_chars: int, max_train: int | None, max_test: int | None, seed: int):
    splits = get_registry().build("datasets", task, {"max_chars": max_chars}).splits()
    train, test = splits["train"], splits["test"]
    rng = random.Random(seed)
    if max_train and len(train) > max_train:
        train = rng.sample(train, max_train)
    if max_test and len(test) > max_test:
        test = rng.sample(test, max_test)
    return train, test


def task_rows(model, tokenizer, task: str, args) -> list[str]:
    train, test = task_split(task, args.max_chars, args.max_train, args.max_test, args.seed)
    labels = train[0]["labels"]
    gold = [e["label"] for e in test]
    positives = [g == labels[-1] for g in gold]
    started = time.perf_counter()
    train_x, _ = decision_features(model, tokenizer, [e["prompt"] for e in train], labels, args.batch_size)
    test_x, margins = decision_features(model, tokenizer, [e["prompt"] for e in test], labels, args.batch_size)
    seconds = time.perf_counter() - started

    def f1(predicted, gold_labels):
        return macro_f1(predicted, gold_labels, labels)

    def versus(reference, predicted):
        paired = paired_metric_bootstrap(gold, reference, predicted, f1)
        low, high = paired["ci95"]
        return f"{paired['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"

    def probe_and_tfidf(picked: list[int]):
        """(probe labels, probe ROC-AUC, C, TF-IDF labels, TF-IDF ROC-AUC) fit on ``picked`` training rows."""
        probe = fit_probe(train_x[picked], [train[i]["label"] for i in picked], args.seed)
        scores = probe.predict_proba(test_x)[:, list(probe.classes_).index(labels[-1])]
        tfidf_labels, tfidf_report = fit_tfidf([train[i] for i in picked], 50_000, 2, 4.0)(test)
        return (list(probe.predict(test_x)), roc_auc(scores.tolist(), positives), float(np.ravel(probe[-1].C_)[0]),
                tfidf_labels, tfidf_report.get("roc_auc", float("nan")))

    probe_labels, probe_auc, c, tfidf_labels, tfidf_auc = probe_and_tfidf(list(range(len(train))))
    majority = max(labels, key=[e["label"] for e in train].count)
    threshold = float(np.median(margins))  # the zero-shot margin has no calibrated cut; split at its median
    margin_labels = [labels[-1] if m > threshold else labels[0] for m in margins]
    rows = [
        (f"majority label (always {majority})", f1([majority] * len(gold), gold), float("nan"),
         versus(tfidf_labels, [majority] * len(gold))),
        ("zero-shot label margin (cut at its median)", f1(margin_labels, gold), roc_auc(margins.tolist(), positives),
         versus(tfidf_labels, margin_labels)),
        ("TF-IDF + LR on the same training examples", f1(tfidf_labels, gold), tfidf_auc, "-"),
        ("probe on the frozen student's features", f1(probe_labels, gold), probe_auc, versus(tfidf_labels, probe_labels)),
    ]
    lines = [f"\n### {task}: {len(train)} training, {len(test)} test examples ({sum(positives)} {labels[-1]}); "
             f"features in {seconds:.0f} s; probe C = {c:.3g}\n",
             "| classifier | macro-F1 | ROC-AUC | macro-F1 - TF-IDF [95% CI] |", "|---|---|---|---|"]
    lines += [f"| {name} | {score:.3f} | {fmt(auc)} | {diff} |" for name, score, auc, diff in rows]
    sizes = [n for n in args.train_sizes if n < len(train)]
    if sizes:
        order = random.Random(args.seed + 1).sample(range(len(train)), len(train))  # nested: each n holds the smaller
        lines += ["", "Fit on the first n of one seeded order of those training examples:", "",
                  "| n | probe macro-F1 | probe ROC-AUC | TF-IDF macro-F1 | TF-IDF ROC-AUC | probe - TF-IDF macro-F1 [95% CI] |",
                  "|---|---|---|---|---|---|"]
        for n in sizes:
            p_labels, p_auc, _, t_labels, t_auc = probe_and_tfidf(order[:n])
            lines.append(f"| {n} | {f1(p_labels, gold):.3f} | {fmt(p_auc)} | {f1(t_labels, gold):.3f} | {fmt(t_auc)} | "
                         f"{versus(t_labels, p_labels)} |")
    return lines


def fmt(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--max-train", type=int, default=600, help="training examples per task (a seeded sample)")
    parser.add_argument("--max-test", type=int, default=300, help="test examples per task (a seeded sample)")
    parser.add_argument("--max-chars", type=int, default=400, help="content cut, as the dataset's max_chars")
    parser.add_argument("--train-sizes", default="16,32,64,128", help="also fit on the first n training examples")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.train_sizes = [int(n) for n in args.train_sizes.split(",") if n]
    model, tokenizer = load_policy(ModelSpec(source="packaged", name="smollm2-135m-instruct"), None)
    model.eval()
    print(f"Frozen SmolLM2-135M-Instruct; content cut to {args.max_chars} characters; test splits; "
          f"seed {args.seed}.")
    for task in args.tasks.split(","):
        print("\n".join(task_rows(model, tokenizer, task, args)), flush=True)


if __name__ == "__main__":
    main()
