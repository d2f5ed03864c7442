"""Helpers every evaluation stage shares: writing outputs, loading variants, bar plots (batched
generation itself lives in ``engine.generation``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from reasonrl.core.errors import ReasonRLError
from reasonrl.core.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from reasonrl.plugins.engine.manifest import write_evaluation_manifest


def write_outputs(folder: Path, variant: str, rows: Sequence[dict]) -> Path:
    """Every generated answer of one variant, as ``outputs_<variant>.jsonl`` (written atomically)."""
    name = "".join(c if c.isalnum() else "_" for c in variant)
    return atomic_write_jsonl(Path(folder) / f"outputs_{name}.jsonl", rows)


def evaluation_examples(context, dataset_ref, split: str, limit: int | None = None) -> list[dict]:
    """The first ``limit`` examples of a split of the stage's dataset, checked to exist."""
    splits = context.build(dataset_ref).splits()
    if split not in splits:
        raise ReasonRLError(f"stage {context.stage_id!r}: dataset {dataset_ref.name!r} has no split {split!r}; "
                            f"it has {sorted(splits)}")
    return splits[split][:limit]


def check_comparisons(variants, comparisons) -> None:
    """Every name of every [baseline, variant] pair must be a variant of the stage."""
    names = {v.name for v in variants}
    for pair in comparisons:
        unknown = [name for name in pair if name not in names]
        if unknown:
            raise ValueError(f"comparisons: {unknown} is not a variant name; the variants are {sorted(names)}")


def paired_lines(results: Sequence[dict[str, Any]], metric: str, unit: str) -> str:
    """Markdown for paired differences (``baseline``, ``variant``, ``difference``, ``ci95`` per result)."""
    lines = []
    for result in results:
        lo, hi = result["ci95"]
        verdict = "better" if lo > 0 else "worse" if hi < 0 else "no difference shown"
        lines.append(f"| {result['variant']} - {result['baseline']} | {result['difference']:+.4f} | "
                     f"[{lo:+.3f}, {hi:+.3f}] | {verdict} |")
    if not lines:
        return ""
    return (f"\n\nPaired differences in {metric} on the same {unit} (bootstrap over {unit}):\n\n"
            "| comparison | difference | 95% CI | verdict |\n|---|---|---|---|\n" + "\n".join(lines))


def report_table(title: str, counted: str, header: Sequence[str], rows: dict[str, Sequence[str]]) -> str:
    """A Markdown table with one row per variant, under a title that says what was counted."""
    columns = ["variant", *header]
    lines = [f"### {title} ({counted})", "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows.items()]
    return "\n".join(lines)


def write_report(folder: Path, payload: dict[str, Any], table: str, rows: dict[str, dict[str, Any]],
                 bar_metrics: Sequence[str]) -> None:
    """``report.json`` (payload), ``report.md`` (table) and ``report.png`` (bars of ``bar_metrics``)."""

    atomic_write_json(Path(folder) / "report.json", payload)
    atomic_write_text(Path(folder) / "report.md", table + "\n")
    bar_plot(Path(folder) / "report.png", payload.get("title", ""), rows, bar_metrics)


class VariantEvaluation:
    """Skeleton of an evaluation stage: every variant is scored on the same examples, then one
    report (json, md, png). A pack fills in ``score_variant`` and ``report``."""

    bar_metrics: Sequence[str] = ()

    def __init__(self, params) -> None:
        self.params = params

    def run(self, context) -> dict[str, Any]:
        p = self.params
        examples = evaluation_examples(context, p.dataset, p.split, p.max_examples)
        rows = {variant.name: self.score_variant(context, variant, examples) for variant in p.variants}
        payload, table = self.report(context, rows, examples)
        write_report(context.stage_dir, payload, table, rows, self.bar_metrics)
        self.write_manifest(context, rows)
        return {"report_markdown": table, "rows": self.summary_rows(rows)}

    best_metric = ""  # the report column that picks the run's default model

    def decode_settings(self, variant):
        """How ``variant`` was decoded (a DecodeSettings), or None for a row without a trained stage."""
        return None

    def write_manifest(self, context, rows: dict[str, dict[str, Any]]) -> None:
        """The settings each trained variant was evaluated with, and the best one (plugins/engine/manifest.py)."""
        # a stage evaluated in several rows (greedy, then sampled) answers as its first row does
        names: dict[str, str] = {}
        settings = []
        for variant in self.params.variants:
            if (decoded := self.decode_settings(variant)) is not None and decoded.stage not in names:
                names[decoded.stage] = variant.name
                settings.append(decoded)
        write_evaluation_manifest(context.stage_dir, context.stage_id, settings, self.best_metric, rows, names)

    def score_variant(self, context, variant, examples: list[dict]) -> dict[str, Any]:
        raise NotImplementedError

    def report(self, context, rows: dict[str, dict[str, Any]], examples: list[dict]) -> tuple[dict[str, Any], str]:
        """(report.json payload, Markdown table)."""
        raise NotImplementedError

    def summary_rows(self, rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return rows


def load_model(spec_or_stage, run_dir: Path):
    """(model, tokenizer) from a ModelSpec, or from the name of an earlier stage of the run."""
    from reasonrl.plugins.engine.models import ModelSpec, load_policy

    spec = ModelSpec(source="stage", stage=spec_or_stage) if isinstance(spec_or_stage, str) else spec_or_stage
    return load_policy(spec, run_dir)


def bar_plot(path: Path, title: str, rows: dict[str, dict[str, Any]], metrics: Sequence[str]) -> None:
    """Grouped bars: one group per row (variant), one bar per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4))
    width = 0.8 / len(metrics)
    for k, metric in enumerate(metrics):
        values = [rows[name].get(metric) or 0.0 for name in rows]
        ax.bar([i + k * width for i in range(len(rows))], values, width, label=metric)
    ax.set_xticks([i + width * (len(metrics) - 1) / 2 for i in range(len(rows))], list(rows), rotation=20,
                  ha="right", fontsize=8)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
