"""Helpers every evaluation stage shares: batched generation with a trained model, bar plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def generate_texts(model, tokenizer, prompts: Sequence[str], sampling, samples: int = 1, seed: int = 0,
                   chat_template: bool = False, desc: str = "generate", progress: bool = True,
                   constraints: Sequence | None = None) -> list[list[str]]:
    """``samples`` completions per prompt, batched by ``sampling.prompt_batch_size`` with a progress
    bar; ``constraints`` (one per prompt) restrict tokens as the rollout engine documents."""
    import torch
    from tqdm.auto import tqdm

    from reasonrl.plugins.models import chat_prompt
    from reasonrl.plugins.rollout import HFRolloutEngine

    model.eval()
    engine = HFRolloutEngine(sampling)
    formatted = [chat_prompt(tokenizer, p, chat_template) for p in prompts]
    size = sampling.prompt_batch_size
    generator = torch.Generator().manual_seed(seed)
    out: list[list[str]] = []
    for start in tqdm(range(0, len(formatted), size), desc=desc, disable=not progress):
        rules = None if constraints is None else constraints[start:start + size]
        texts = engine.generate(model, tokenizer, formatted[start:start + size], samples, generator=generator,
                                constraints=rules).texts
        out += [texts[i:i + samples] for i in range(0, len(texts), samples)]
    return out


def write_outputs(folder: Path, variant: str, rows: Sequence[dict]) -> Path:
    """Every generated answer of one variant, as ``outputs_<variant>.jsonl`` (written atomically)."""
    import json

    from reasonrl.core.io import atomic_write_text

    name = "".join(c if c.isalnum() else "_" for c in variant)
    path = Path(folder) / f"outputs_{name}.jsonl"
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def load_model(spec_or_stage, run_dir: Path):
    """(model, tokenizer) from a ModelSpec, or from the name of an earlier stage of the run."""
    from reasonrl.plugins.models import load_policy
    from reasonrl.plugins.params import ModelSpec

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
