"""The ``moderation_warm_start`` stage: a label-only SFT start that RL can learn from.

RL needs reward variance inside each group of rollouts. A warm start that answers the
majority label for everything gives none, so this stage trains on class-balanced batches,
scores the policy on a validation split as it trains, keeps the checkpoint with the best
macro-F1, and stops with an error when even that one answers a single label.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import torch
from pydantic import Field
from safetensors.torch import load_file, save_file

from reasonrl.core.errors import ReasonRLError
from reasonrl.core.io import atomic_write_json
from reasonrl.plugins.engine.rollout import SamplingParams
from reasonrl.plugins.engine.supervised import SFTParams, SFTStage

BEST_WEIGHTS = "best_trainable.safetensors"


class WarmStartParams(SFTParams):
    balance_field: str | None = "label"
    """class-balanced batches by default: a majority-label policy gives RL no reward variance"""
    select_split: str = "validation"
    """the split the checkpoints are scored on (the test split stays untouched)"""
    select_examples: int | None = Field(None, gt=0)
    """score on the first N examples of select_split (default: all)"""
    select_every: int | None = Field(None, gt=0)
    """optimiser steps between scorings (default: once per pass over the data); the last step is always scored"""
    metric: str = "macro_f1"
    """the score that picks the checkpoint (ties: the earlier one)"""
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(top_k=1, max_new_tokens=48))
    """decoding of the scoring (greedy by default)"""


def label_shares(verdicts: list[dict[str, Any]]) -> dict[str, float]:
    """Share of answers per predicted label (``none``: no label parsed)."""
    counts = Counter(str(v["label"]) if v["label"] is not None else "none" for v in verdicts)
    return {label: count / len(verdicts) for label, count in sorted(counts.items())}


class ModerationWarmStart(SFTStage):
    def run(self, context):
        p = self.params
        self.context = context
        self.scoring = self.examples(p.select_split, ("prompt", "label", "labels"))[: p.select_examples]
        self.pass_steps = max(1, round(len(self.examples(p.split)) / p.batch_size))
        return super().run(context)

    def after_step(self, step: int) -> None:
        every = self.params.select_every or self.pass_steps
        if step % every and step != self.total_steps:
            return
        record = {"step": step, **self.score()}
        history = self.state.setdefault("selection", [])
        history.append(record)
        if record is max(history, key=lambda r: r[self.params.metric]):  # ties keep the earlier checkpoint
            self.keep_best(step)

    def score(self) -> dict[str, Any]:
        from reasonrl.moderation_plugins.evaluate import classify_examples, score_verdicts

        p = self.params
        model = self.accelerator.unwrap_model(self.model)
        verdicts, _ = classify_examples(model, self.tokenizer, self.scoring, p.sampling, seed=self.seed,
                                        chat_template=p.chat_template, desc="score warm start", progress=False)
        model.train()
        metrics = score_verdicts(self.scoring, verdicts)
        if p.metric not in metrics:
            raise ReasonRLError(f"stage {self.context.stage_id!r}: metric {p.metric!r} is not reported; choose one "
                                f"of {sorted(k for k, v in metrics.items() if isinstance(v, float))}")
        return {p.metric: float(metrics[p.metric]), "roc_auc": metrics.get("roc_auc"),
                "parse_failure_rate": metrics["parse_failure_rate"], "cut_rate": metrics["cut_rate"],
                "label_shares": label_shares(verdicts)}

    def keep_best(self, step: int) -> None:
        """Write the trainable weights of ``step`` (small with LoRA) atomically: a resume keeps them."""
        self.state["best_step"] = step
        if not self.accelerator.is_main_process:
            return
        model = self.accelerator.unwrap_model(self.model)
        tensors = {n: t.detach().contiguous().clone() for n, t in model.named_parameters() if t.requires_grad}
        path = self.context.stage_dir / BEST_WEIGHTS
        staging = path.with_name(path.name + ".tmp")
        save_file(tensors, str(staging))
        os.replace(staging, path)

    def before_save(self) -> dict[str, Any]:
        p = self.params
        history = self.state["selection"]
        best = next(r for r in history if r["step"] == self.state["best_step"])
        atomic_write_json(self.context.stage_dir / "selection.json", {"metric": p.metric, "best": best,
                                                                      "history": history})
        if self.state["best_step"] != history[-1]["step"]:
            self.restore_best()
        answered = [label for label, share in best["label_shares"].items() if label != "none" and share > 0]
        if len(answered) < 2:
            raise ReasonRLError(
                f"stage {self.context.stage_id!r}: every scored checkpoint answers one label at most (best, step "
                f"{best['step']}: {best['label_shares']} on {len(self.scoring)} {p.select_split} examples). RL "
                f"from it would see no reward variance. Fix: more warm-start examples or steps (epochs), a "
                f"different lr, or balance_field: label if it was turned off. The scores of every checkpoint "
                f"are in {self.context.stage_dir / 'selection.json'}.")
        print(f"    {self.context.stage_id}: kept step {best['step']} of {self.total_steps} "
              f"({p.metric} {best[p.metric]:.4f} on {len(self.scoring)} {p.select_split} examples; "
              f"answers {best['label_shares']})")
        return {"selected_step": best["step"], f"selected_{p.metric}": best[p.metric],
                "selected_label_shares": best["label_shares"]}

    def restore_best(self) -> None:
        model = self.accelerator.unwrap_model(self.model)
        best = load_file(str(self.context.stage_dir / BEST_WEIGHTS), device=str(self.accelerator.device))
        with torch.no_grad():
            for name, tensor in model.named_parameters():
                if name in best:
                    tensor.copy_(best[name])
