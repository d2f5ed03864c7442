"""The ``gr2_evaluate`` stage: every variant reranks the same test lists; one table, one plot."""

from __future__ import annotations

from collections import Counter
from typing import Any

from reasonrl.core.contracts import StageContext
from reasonrl.core.io import atomic_write_json, atomic_write_text
from reasonrl.gr2_plugins.metrics import bootstrap_interval, identity_copy_rate, ndcg_at, rank_of, ranking_metrics
from reasonrl.gr2_plugins.params import GR2EvaluateParams, Variant
from reasonrl.gr2_plugins.parsing import parse_ranking

COLUMNS = ["recall@1", "recall@3", "recall@5", "ndcg@3", "ndcg@5", "ndcg@10"]


def score_variant(examples: list[dict], outputs: list[str] | None, samples: int) -> dict[str, Any]:
    """Metrics of one variant; ``outputs`` None means the input (pre-ranker) order."""
    rankings, failures = [], Counter()
    for i, example in enumerate(examples):
        if outputs is None:
            rankings.append(example["candidate_ids"])
            continue
        parsed = parse_ranking(outputs[i], example["candidates"])
        if parsed.valid:
            rankings.append([example["candidate_ids"][j] for j in parsed.order])
        else:
            rankings.append(None)
            failures[parsed.error] += 1
    targets = [e["target"] for e in examples]
    metrics = ranking_metrics(rankings, targets)
    ndcg5 = [ndcg_at(rank_of(r, t) if r is not None else None, 5) for r, t in zip(rankings, targets)]
    metrics["ndcg@5_ci95"] = bootstrap_interval(ndcg5, samples)
    metrics["identity_copy_rate"] = identity_copy_rate(rankings, [e["candidate_ids"] for e in examples])
    metrics["parse_failure_rate"] = sum(failures.values()) / max(len(examples), 1)
    metrics["parse_failures"] = dict(failures)
    return metrics


def markdown_table(title: str, rows: dict[str, dict[str, Any]], n: int) -> str:
    header = ["variant", *COLUMNS, "NDCG@5 95% CI", "copies input", "parse failures"]
    lines = [f"### {title} ({n} test lists)", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, m in rows.items():
        lo, hi = m["ndcg@5_ci95"]
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in COLUMNS) +
                     f" | [{lo:.3f}, {hi:.3f}] | {m['identity_copy_rate']:.2f} | {m['parse_failure_rate']:.2f} |")
    return "\n".join(lines)


def bar_plot(path, title: str, rows: dict[str, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["recall@1", "recall@5", "ndcg@5"]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4))
    width = 0.8 / len(metrics)
    for k, metric in enumerate(metrics):
        values = [rows[name][metric] for name in rows]
        ax.bar([i + k * width for i in range(len(rows))], values, width, label=metric)
    ax.set_xticks([i + width for i in range(len(rows))], list(rows), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class GR2Evaluate:
    def __init__(self, params: GR2EvaluateParams) -> None:
        self.params = params

    def run(self, context: StageContext) -> dict[str, Any]:
        p = self.params
        examples = context.build(p.dataset).splits()[p.split][: p.max_examples]
        rows = {}
        for variant in p.variants:
            outputs = None if variant.stage is None else self.generate(context, variant, examples)
            rows[variant.name] = score_variant(examples, outputs, p.bootstrap_samples)
        table = markdown_table(p.title, rows, len(examples))
        atomic_write_json(context.stage_dir / "report.json", {"title": p.title, "lists": len(examples), "rows": rows})
        atomic_write_text(context.stage_dir / "report.md", table + "\n")
        bar_plot(context.stage_dir / "report.png", p.title, rows)
        return {"report_markdown": table, "rows": rows}

    def generate(self, context: StageContext, variant: Variant, examples: list[dict]) -> list[str]:
        import torch
        from tqdm.auto import tqdm

        from reasonrl.plugins.models import chat_prompt, load_policy
        from reasonrl.plugins.params import ModelSpec
        from reasonrl.plugins.rollout import HFRolloutEngine

        model, tokenizer = load_policy(ModelSpec(source="stage", stage=variant.stage), context.run_dir)
        model.eval()
        engine = HFRolloutEngine(self.params.sampling)
        prompts = [chat_prompt(tokenizer, e["prompt"], variant.chat_template) for e in examples]
        size = self.params.sampling.prompt_batch_size
        texts: list[str] = []
        generator = torch.Generator().manual_seed(context.seed)
        for start in tqdm(range(0, len(prompts), size), desc=f"eval {variant.name}", disable=not self.params.progress):
            texts += engine.generate(model, tokenizer, prompts[start:start + size], 1, generator=generator).texts
        return texts
