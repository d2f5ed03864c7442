"""What RL can gain over a GR2 student that half-copies the co-watching hint, and how close it is.

Two tables for a finished ``examples/gr2_ml1m_hint.yaml`` run:

1. **The reward's landscape**: NDCG@3 and NDCG@5 of simple answers built from the prompt's hint
   (the rule's first number, first two, all three, and the student's usual error of putting the
   input's first candidate second), on the training lists RL draws from and on the test lists.
   It shows how much ``rank_gain`` pays for finishing the copy against the near misses.
2. **The student's copy margin**: each trained stage read teacher-forced on the teacher's own
   answer for the first ``--lists`` test lists: the mean probability of the right number at each
   slot after a right prefix, and the share of lists where it is the most likely next token.
3. **A lower-noise reward?** Per training list, what finishing the copy earns over a near miss,
   under ``rank_gain`` (the one held-out target) and under its expectation over the prepare stage's
   evidence model (the target integrated over that model's softmax across the candidates): the
   mean, the spread over lists, and the lists a two-sigma decision needs.
4. **How far each evaluated row is from the teacher**: the per-list NDCG@5 the run's evaluation
   reported (``evaluate/report.json``, the pre-ranker included) against the rule's top three on the
   same test lists, with a paired bootstrap interval: the whole gap RL could close, not one error's.

    python bench/gr2_rule_margin.py runs/gr2_ml1m_hint --stages sft rl_gain --out bench/results/gr2_rule_margin.md
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

import torch
from scipy.special import softmax

sys.path.insert(0, str(Path(__file__).parent))
from bench_output import save_table  # noqa: E402

from reasonrl.gr2_plugins.feature_teacher import FeatureRankerTeacher  # noqa: E402
from reasonrl.gr2_plugins.metrics import chance_metrics, ndcg_at, paired_bootstrap  # noqa: E402
from reasonrl.gr2_plugins.prepare import EvidenceModel  # noqa: E402
from reasonrl.gr2_plugins.prompts import hint_leaders, hint_numbers  # noqa: E402

# answers by the hint's leaders h (1-based candidate numbers); the rest keep the input order
POLICIES: dict[str, Callable[[list[int]], list[int]]] = {
    "input order": lambda h: [],
    "rule's first": lambda h: h[:1],
    "rule's first two": lambda h: h[:2],
    "rule's top three (the teacher)": lambda h: h[:3],
    "rule's first, input's first, rule's second": lambda h: [h[0], 1, h[1]],
    "input's first, then the rule's first two": lambda h: [1, h[0], h[1]],
}
# (better answer, worse answer) pairs whose reward margin the third table measures
MARGINS = [("rule's top three (the teacher)", "rule's first"),
           ("rule's top three (the teacher)", "rule's first, input's first, rule's second")]
SLOTS = ["explanation 2nd", "explanation 3rd", "answer 1st", "answer 2nd", "answer 3rd"]


def full_order(top: Sequence[int], size: int) -> list[int]:
    """``top`` without repeats, then the other candidates in input order (as ``index`` answers read)."""
    head = list(dict.fromkeys(n for n in top if 1 <= n <= size))
    return head + [n for n in range(1, size + 1) if n not in head]


def policy_scores(rows: Sequence[dict], k: int) -> dict[str, float]:
    """Mean NDCG@k of each policy's answer over ``rows`` (one relevant candidate per list)."""
    out = {}
    for name, policy in POLICIES.items():
        total = 0.0
        for row in rows:
            order = full_order(policy(hint_leaders(row["evidence"])), len(row["candidate_ids"]))
            total += ndcg_at(order.index(row["target_index"] + 1) + 1, k)
        out[name] = total / max(len(rows), 1)
    return out


def answer_gains(row: dict, posterior: Sequence[float], k: int) -> dict[str, tuple[float, float]]:
    """Per policy: (NDCG@k gain over the input order for the list's target, the same gain's
    expectation when the target is drawn from ``posterior`` over the candidates)."""
    size = len(row["candidate_ids"])
    out = {}
    for name, policy in POLICIES.items():
        order = full_order(policy(hint_leaders(row["evidence"])), size)
        gains = [ndcg_at(order.index(i + 1) + 1, k) - ndcg_at(i + 1, k) for i in range(size)]
        out[name] = (gains[row["target_index"]], sum(p * g for p, g in zip(posterior, gains)))
    return out


def margin_stats(diffs: Sequence[float]) -> str:
    """mean, spread and the lists a two-sigma decision needs, (2 sd / mean)^2."""
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / len(diffs))
    lists = f"{(2 * sd / mean) ** 2:,.0f}" if mean > 0 else "never"
    return f"{mean:+.4f} | {sd:.4f} | {lists}"


def reward_noise_table(run: Path, k: int = 3) -> str:
    rows = read_rows(run / "prepare" / "train.jsonl")
    model = EvidenceModel.from_description(json.loads((run / "prepare" / "evidence_model.json").read_text()))
    gains = [answer_gains(row, softmax(model.scores(row["features"])), k) for row in rows]
    lines = [f"| margin (train lists, NDCG@{k}) | reward | mean | spread over lists | lists for 2 sigma |",
             "|---|---|---|---|---|"]
    for better, worse in MARGINS:
        for column, label in ((0, "rank_gain (the target)"), (1, "expected over the evidence model")):
            stats = margin_stats([g[better][column] - g[worse][column] for g in gains])
            lines.append(f"| {better} - {worse} | {label} | {stats} |")
    return "\n".join(lines)


def number_tokens(tokenizer, completion: str) -> list[int]:
    """Token positions (within the completion) of the six numbers the teacher's answer writes:
    three in the explanation, three in the list."""
    offsets = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    starts = [m.start() for m in re.finditer(r"\d+", completion)]
    return [next(i for i, (a, b) in enumerate(offsets) if a <= s < b) for s in starts]


def copy_margin(model, tokenizer, rows: Sequence[dict]) -> dict[str, tuple[float, float]]:
    """Per slot of :data:`SLOTS`: (mean probability of the right token, share where it is the argmax)."""
    probs: dict[str, list[float]] = {s: [] for s in SLOTS}
    tops: dict[str, list[float]] = {s: [] for s in SLOTS}
    for row in rows:
        completion = FeatureRankerTeacher.copy_hint(hint_numbers(hint_leaders(row["evidence"])))
        prompt_ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        sep = tokenizer("\n", add_special_tokens=False)["input_ids"]  # the SFT segments' separator
        answer_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + sep + answer_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        base = len(prompt_ids) + len(sep)
        for slot, at in zip(SLOTS, number_tokens(tokenizer, completion)[1:]):
            step = logits[base + at - 1]
            token = answer_ids[at]
            probs[slot].append(step.softmax(-1)[token].item())
            tops[slot].append(float(step.argmax().item() == token))
    return {s: (sum(probs[s]) / len(probs[s]), sum(tops[s]) / len(tops[s])) for s in SLOTS}


def read_rows(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if limit is not None and len(rows) >= limit:
                break
            rows.append(json.loads(line))
    return rows


def landscape_table(run: Path) -> str:
    splits = {name: read_rows(run / "prepare" / f"{name}.jsonl") for name in ("train", "test")}
    scores = {(name, k): policy_scores(rows, k) for name, rows in splits.items() for k in (3, 5)}
    lines = [f"| answer | train NDCG@3 ({len(splits['train'])} lists) | train NDCG@5 | "
             f"test NDCG@3 ({len(splits['test'])} lists) | test NDCG@5 |", "|---|---|---|---|---|"]
    chance = [f"{chance_score(splits[s], k):.4f}" for s in ("train", "test") for k in (3, 5)]
    lines.append("| chance (random order, exact expectation) | " + " | ".join(chance) + " |")
    for name in POLICIES:
        cells = [f"{scores[(s, k)][name]:.4f}" for s in ("train", "test") for k in (3, 5)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chance_score(rows: Sequence[dict], k: int) -> float:
    return sum(chance_metrics(len(r["candidate_ids"]), (k,))[f"ndcg@{k}"] for r in rows) / max(len(rows), 1)


def reward_spread(run: Path, stage: str) -> str:
    """The mean over RL steps of the rollouts' reward standard deviation (the rl stage's history),
    '-' for a stage that logged none: the noise a decision's reward difference has to beat."""
    history = run / stage / "history.json"
    steps = json.loads(history.read_text()) if history.exists() else []
    spreads = [step["reward/std"] for step in steps if "reward/std" in step]
    return f"{sum(spreads) / len(spreads):.3f}" if spreads else "-"


def margin_table(run: Path, stages: Sequence[str], lists: int) -> str:
    from reasonrl.plugins.engine.models import load_trained

    rows = read_rows(run / "prepare" / "test.jsonl", lists)
    lines = ["| stage | " + " | ".join(SLOTS) + " | rollout reward std (mean over RL steps) |",
             "|---|" + "---|" * (len(SLOTS) + 1)]
    for stage in stages:
        model, tokenizer = load_trained(run, stage, device="cpu", dtype="float32")
        margin = copy_margin(model, tokenizer, rows)
        cells = [f"{p:.2f} / {top:.2f}" for p, top in margin.values()] + [reward_spread(run, stage)]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rule_ndcg(row: dict, k: int = 5) -> float:
    order = full_order(POLICIES["rule's top three (the teacher)"](hint_leaders(row["evidence"])), len(row["candidate_ids"]))
    return ndcg_at(order.index(row["target_index"] + 1) + 1, k)


def teacher_gap_table(run: Path) -> str:
    """Per row of the run's evaluation: its NDCG@5, the rule's on the same lists (the evaluation
    scores the first lists of ``prepare/test.jsonl``, in order), rule - row [paired 95% CI], and
    the share of lists where the two score differently."""
    report = json.loads((run / "evaluate" / "report.json").read_text())
    lines = ["| row | lists | its NDCG@5 | the rule's top three | rule - row [95% CI] | lists scored differently |",
             "|---|---|---|---|---|---|"]
    for name, metrics in report["rows"].items():
        mine = metrics.get("ndcg@5_per_list")
        if mine is None:  # the chance row has no lists
            continue
        rule = [rule_ndcg(row) for row in read_rows(run / "prepare" / "test.jsonl", len(mine))]
        gap = paired_bootstrap(mine, rule, samples=2000)
        low, high = gap["ci95"]
        differ = sum(a != b for a, b in zip(mine, rule)) / len(mine)
        lines.append(f"| {name} | {len(mine)} | {sum(mine) / len(mine):.4f} | {sum(rule) / len(rule):.4f} | "
                     f"{gap['difference']:+.4f} [{low:+.4f}, {high:+.4f}] | {differ:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a finished gr2_ml1m_hint-style run folder")
    parser.add_argument("--stages", nargs="*", default=["sft"], help="trained stages to read (none: the landscape only)")
    parser.add_argument("--lists", type=int, default=300, help="test lists for the copy margin")
    parser.add_argument("--out", type=Path, help="also write the tables here")
    args = parser.parse_args(argv)
    text = ("NDCG of answers built from the co-watching hint (the rest of each list keeps the input order):\n\n"
            + landscape_table(args.run) + "\n")
    text += ("\nWhat finishing the copy earns per training list, under the target and under its expectation "
             "over the evidence model:\n\n" + reward_noise_table(args.run) + "\n")
    text += ("\nEach evaluated row (greedy answers, the pre-ranker's order) against the rule's top three on the "
             "same test lists:\n\n"
             + teacher_gap_table(args.run) + "\n")
    if args.stages:
        text += (f"\nCopy margin, teacher-forced on the teacher's answer, first {args.lists} test lists "
                 "(mean probability of the right number / share where it is the most likely token):\n\n"
                 + margin_table(args.run, args.stages, args.lists) + "\n")
    print(text)
    save_table(args.out, "gr2_rule_margin.py", argv, text)


if __name__ == "__main__":
    main()
