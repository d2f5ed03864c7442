"""The ``gr2_evaluate`` stage: every variant reranks the same test lists; one table, one plot."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import Field, model_validator

from reasonrl.core.config import ConstraintRef, DatasetRef
from reasonrl.core.contracts import StageContext
from reasonrl.core.io import read_json
from reasonrl.core.registry import Params
from reasonrl.gr2_plugins.constraints import constraint_opened
from reasonrl.gr2_plugins.metrics import (
    bootstrap_interval,
    chance_metrics,
    identity_copy_rate,
    ndcg_at,
    paired_bootstrap,
    rank_of,
    ranking_metrics,
)
from reasonrl.gr2_plugins.parsing import parse_answer
from reasonrl.gr2_plugins.rewards import co_watching_behaviour
from reasonrl.plugins.engine.manifest import DecodeSettings
from reasonrl.plugins.engine.generation import generate_texts
from reasonrl.plugins.engine.rollout import SamplingParams
from reasonrl.plugins.evaluation import (
    VariantEvaluation,
    check_comparisons,
    load_model,
    paired_lines,
    report_table,
    write_outputs,
)


class Variant(Params):
    name: str = Field(description="row label, e.g. 'RL, conditional reward'")
    stage: str | None = Field(None, description="the training stage whose model reranks; None = the pre-ranker order")
    chat_template: bool = False
    """wrap the prompt in the tokenizer's chat template"""


class GR2EvaluateParams(Params):
    dataset: DatasetRef
    """the examples to rerank (usually the prepare stage's test.jsonl)"""
    split: str = "test"
    """the dataset split to evaluate on"""
    variants: list[Variant] = Field(min_length=1)
    """the rows of the report: the pre-ranker and trained stages"""
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(top_k=1, max_new_tokens=256))
    """decoding settings for every variant (greedy with top_k: 1)"""
    max_examples: int | None = Field(None, gt=0)
    """evaluate only the first N examples (default: all)"""
    bootstrap_samples: int = Field(1000, ge=10)
    """bootstrap resamples for the confidence intervals"""
    title: str = "GR2 reranking"
    """the report's title"""
    constraint: ConstraintRef | None = Field(None, description="a decoding constraint, e.g. sid_trie")
    trace_stages: list[str] = Field(default_factory=list, description="teacher_traces stages whose acceptance "
                                    "rate and tries per accepted trace the report shows")
    comparisons: list[tuple[str, str]] = Field(default_factory=list)
    """pairs of variant names [baseline, variant]: the report gives variant - baseline NDCG@5 on the
    same lists with a paired bootstrap 95% interval"""
    progress: bool = True
    """show progress bars"""

    @model_validator(mode="after")
    def _comparisons_name_variants(self):
        check_comparisons(self.variants, self.comparisons)
        return self


COLUMNS = ["recall@1", "recall@3", "recall@5", "ndcg@3", "ndcg@5", "ndcg@10"]


def score_variant(examples: list[dict], outputs: list[str] | None, samples: int) -> dict[str, Any]:
    """Metrics of one variant; ``outputs`` None means the input (pre-ranker) order."""
    orders, failures = [], Counter()  # positions in the input order per list; None: the answer failed to parse
    for i, example in enumerate(examples):
        if outputs is None:
            orders.append(list(range(len(example["candidate_ids"]))))
            continue
        parsed = parse_answer(outputs[i], example)
        orders.append(parsed.order if parsed.valid else None)
        if not parsed.valid:
            failures[parsed.error] += 1
    rankings = [None if order is None else [e["candidate_ids"][j] for j in order]
                for e, order in zip(examples, orders)]
    targets = [e["target"] for e in examples]
    metrics = ranking_metrics(rankings, targets)
    ndcg5 = [ndcg_at(rank_of(r, t) if r is not None else None, 5) for r, t in zip(rankings, targets)]
    metrics["ndcg@5_ci95"] = bootstrap_interval(ndcg5, samples)
    metrics["ndcg@5_per_list"] = ndcg5
    metrics["identity_copy_rate"] = identity_copy_rate(rankings, [e["candidate_ids"] for e in examples])
    metrics["parse_failure_rate"] = sum(failures.values()) / max(len(examples), 1)
    metrics["parse_failures"] = dict(failures)
    if outputs is not None:
        metrics["constraint_opened_rate"] = sum(map(constraint_opened, outputs)) / max(len(examples), 1)
    if all(e.get("evidence") for e in examples):
        metrics.update(co_watching_rates(examples, orders))
    return metrics


def co_watching_rates(examples: list[dict], orders: list[list[int] | None]) -> dict[str, float]:
    """Shares of all lists whose ranking starts with the co-watching rule's first candidate, and
    with its top three in order (a failed parse follows nothing)."""
    followed = [co_watching_behaviour(order, e["evidence"]) for e, order in zip(examples, orders) if order is not None]
    return {f"{key}_rate": sum(b[key] for b in followed) / len(examples)
            for key in ("co_watching_first", "co_watching_top3")}


def co_watching_line(rows: dict[str, dict[str, Any]]) -> str:
    """One line: per row, how often its answer follows the co-watching rule (first / top three)."""
    shares = [f"{name} {m['co_watching_first_rate']:.2f} / {m['co_watching_top3_rate']:.2f}"
              for name, m in rows.items() if "co_watching_first_rate" in m]
    if not shares:
        return ""
    return ("\n\nFollows the co-watching rule (the candidate most watched right after the last film first / "
            "the rule's top three in order), share of lists: " + "; ".join(shares) + ".")


def markdown_table(title: str, rows: dict[str, dict[str, Any]], n: int) -> str:
    header = [*COLUMNS, "NDCG@5 95% CI", "copies input", "parse failures", "answer opened by the constraint"]
    cells = {name: [f"{m[c]:.4f}" for c in COLUMNS] + [
        "[{:.3f}, {:.3f}]".format(*m["ndcg@5_ci95"]), f"{m['identity_copy_rate']:.2f}", f"{m['parse_failure_rate']:.2f}",
        f"{m['constraint_opened_rate']:.2f}" if "constraint_opened_rate" in m else "-"]
        for name, m in rows.items()}
    return report_table(title, f"{n} test lists", header, cells)


def chance_row(size: int) -> str:
    """The exact expectation of a uniformly random order, as a table row."""
    chance = chance_metrics(size)
    return "| chance (random order, exact expectation) | " + " | ".join(
        f"{chance[c]:.4f}" for c in COLUMNS) + " | - | - | - | - |"


def verdict_lines(rows: dict[str, dict[str, Any]], examples: list[dict], samples: int) -> str:
    """Per trained row: does it beat chance, and the pre-ranker (paired, same lists)? And its
    NDCG@5 on the lists whose target came in a later second than the last history item."""
    size = len(examples[0]["candidates"])
    floor = chance_metrics(size)["ndcg@5"]
    pre = next((m for m in rows.values() if not m.get("trained")), None)  # the input order
    later = [i for i, e in enumerate(examples) if e.get("same_second") is False]
    lines = []
    for name, m in rows.items():
        if not m.get("trained"):
            continue
        values = m["ndcg@5_per_list"]
        lo, hi = bootstrap_interval([v - floor for v in values], samples)
        line = f"- {name}: - chance {m['ndcg@5'] - floor:+.4f} [{lo:+.3f}, {hi:+.3f}] ({verdict(lo, hi, 'beats chance')})"
        if pre is not None:
            paired = paired_bootstrap(pre["ndcg@5_per_list"], values, samples)
            plo, phi = paired["ci95"]
            line += (f"; - pre-ranker {paired['difference']:+.4f} [{plo:+.3f}, {phi:+.3f}] "
                     f"({verdict(plo, phi, 'beats the pre-ranker')})")
        if later:
            line += f"; NDCG@5 on the {len(later)} lists whose target came in a later second {sum(values[i] for i in later) / len(later):.4f}"
            if pre is not None:
                line += f" (pre-ranker {sum(pre['ndcg@5_per_list'][i] for i in later) / len(later):.4f})"
        lines.append(line)
    return ("\n\nVerdicts (NDCG@5, 95% bootstrap intervals over lists):\n" + "\n".join(lines)) if lines else ""


def verdict(lo: float, hi: float, claim: str) -> str:
    return claim if lo > 0 else ("loses" if hi < 0 else "not shown")


def comparison_lines(rows: dict[str, dict[str, Any]], pairs, samples: int) -> tuple[list[dict], str]:
    """Paired differences in NDCG@5 between variants on the same lists."""
    results = [{"baseline": baseline, "variant": variant,
                **paired_bootstrap(rows[baseline]["ndcg@5_per_list"], rows[variant]["ndcg@5_per_list"], samples)}
               for baseline, variant in pairs]
    return results, paired_lines(results, "NDCG@5", "lists")


def trace_lines(traces: dict[str, dict[str, Any]]) -> str:
    lines = [f"- `{stage}` ({t['mode']}): {t['accepted']}/{t['examples']} accepted ({t['acceptance_rate']:.0%}), "
             f"{t.get('kept', t['accepted'])} kept for SFT, {t['tries_per_accepted']:.2f} samples per accepted trace"
             for stage, t in traces.items()]
    return ("\n\nTeacher traces:\n" + "\n".join(lines)) if lines else ""


class GR2Evaluate(VariantEvaluation):
    bar_metrics = ("recall@1", "recall@5", "ndcg@5")
    best_metric = "ndcg@5"

    def decode_settings(self, variant: Variant):
        if variant.stage is None:
            return None
        p = self.params
        return DecodeSettings(stage=variant.stage, chat_template=variant.chat_template, constraint=p.constraint,
                              max_new_tokens=p.sampling.max_new_tokens, prompt_batch_size=p.sampling.prompt_batch_size)

    def score_variant(self, context: StageContext, variant: Variant, examples: list[dict]) -> dict[str, Any]:
        outputs = None if variant.stage is None else self.generate(context, variant, examples)
        if outputs is not None:
            write_outputs(context.stage_dir, variant.name, [
                {"user": e.get("user"), "target_index": e["target_index"], "output": o}
                for e, o in zip(examples, outputs)])
        return {**score_variant(examples, outputs, self.params.bootstrap_samples), "trained": outputs is not None}

    def report(self, context: StageContext, rows, examples):
        p = self.params
        traces = {stage: read_json(context.stage_output(stage) / "summary.json") for stage in p.trace_stages}
        comparisons, paired = comparison_lines(rows, p.comparisons, p.bootstrap_samples)
        table = (markdown_table(p.title, rows, len(examples)) + "\n" + chance_row(len(examples[0]["candidates"]))
                 + verdict_lines(rows, examples, p.bootstrap_samples) + co_watching_line(rows) + paired
                 + trace_lines(traces))
        return {"title": p.title, "lists": len(examples), "rows": rows, "comparisons": comparisons,
                "traces": traces}, table

    def summary_rows(self, rows):
        return {name: {k: v for k, v in m.items() if k not in ("ndcg@5_per_list", "trained")} for name, m in rows.items()}

    def generate(self, context: StageContext, variant: Variant, examples: list[dict]) -> list[str]:
        model, tokenizer = load_model(variant.stage, context.run_dir)
        constraints = None
        if self.params.constraint is not None:
            builder = context.build(self.params.constraint)
            constraints = [builder.for_example(tokenizer, e) for e in examples]
        texts = generate_texts(model, tokenizer, [e["prompt"] for e in examples], self.params.sampling,
                               seed=context.seed, chat_template=variant.chat_template,
                               desc=f"eval {variant.name}", progress=self.params.progress, constraints=constraints)
        return [t[0] for t in texts]
