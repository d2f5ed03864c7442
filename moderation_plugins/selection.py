"""Checkpoint selection by a validation score, shared by the warm-start SFT and the RL stage.

A stage with this mixin scores its policy on a held-out split as it trains (greedy verdicts,
under the stage's decoding constraint if it has one), writes the trainable weights of the
best-scoring checkpoint atomically, and puts them back before the model is saved. The test
split stays untouched.
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
from reasonrl.core.registry import Params
from reasonrl.plugins.engine.rollout import SamplingParams

BEST_WEIGHTS = "best_trainable.safetensors"


class SelectionParams(Params):
    select_split: str = "validation"
    """the split the checkpoints are scored on (the test split stays untouched)"""
    select_examples: int | None = Field(None, gt=0)
    """score on the first N examples of select_split (default: all)"""
    select_every: int | None = Field(None, gt=0)
    """optimiser steps between scorings (the stage's default if unset); the last step is always scored"""
    metric: str = "macro_f1"
    """the score that picks the checkpoint (ties: the earlier one)"""
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(top_k=1, max_new_tokens=48))
    """decoding of the scoring (greedy by default)"""


def label_shares(verdicts: list[dict[str, Any]]) -> dict[str, float]:
    """Share of answers per predicted label (``none``: no label parsed)."""
    counts = Counter(str(v["label"]) if v["label"] is not None else "none" for v in verdicts)
    return {label: count / len(verdicts) for label, count in sorted(counts.items())}


class ValidationSelection:
    """Mixin for a trainer with ``self.state`` (checkpointed) and ``self.params`` (SelectionParams)."""

    constraint = None  # a stage with a decoding constraint scores under it

    def prepare_selection(self) -> None:
        p = self.params
        self.scoring = self.examples(p.select_split, ("prompt", "label", "labels"))[: p.select_examples]

    def select_at(self, step: int) -> None:
        """Score the policy after ``step`` optimiser steps and keep it if it is the best so far."""
        record = {"step": step, **self.score()}
        history = self.state.setdefault("selection", [])
        history.append(record)
        if record is max(history, key=lambda r: r[self.params.metric]):  # ties keep the earlier checkpoint
            self.keep_best(step)

    def score(self) -> dict[str, Any]:
        from reasonrl.moderation_plugins.evaluate import classify_examples, score_verdicts

        p = self.params
        model = self.accelerator.unwrap_model(self.model)
        rule = self.constraint
        constraints = None if rule is None else [rule.for_example(self.tokenizer, e) for e in self.scoring]
        verdicts, _ = classify_examples(model, self.tokenizer, self.scoring, p.sampling, seed=self.seed,
                                        chat_template=p.chat_template, desc=f"score {self.context.stage_id}",
                                        progress=False, constraints=constraints)
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

    def finish_selection(self) -> dict[str, Any]:
        """Write selection.json, put the best checkpoint back (also when it is the last scored: a stage
        stopped by a guard holds another policy by then); returns its record."""
        history = self.state["selection"]
        best = next(r for r in history if r["step"] == self.state["best_step"])
        atomic_write_json(self.context.stage_dir / "selection.json", {"metric": self.params.metric, "best": best,
                                                                      "history": history})
        self.restore_best()
        return best

    def selection_summary(self, best: dict[str, Any]) -> dict[str, Any]:
        p = self.params
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
