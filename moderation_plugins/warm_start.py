"""The ``moderation_warm_start`` stage: a label-only SFT start that RL can learn from.

RL needs reward variance inside each group of rollouts. A warm start that answers the
majority label for everything gives none, so this stage trains on class-balanced batches,
scores the policy on a validation split as it trains, keeps the checkpoint with the best
macro-F1, and stops with an error when even that one answers a single label.
"""

from __future__ import annotations

from typing import Any

from reasonrl.core.config import ConstraintRef
from reasonrl.core.errors import ReasonRLError
from reasonrl.moderation_plugins.selection import SelectionParams, ValidationSelection
from reasonrl.plugins.engine.supervised import SFTParams, SFTStage


class WarmStartParams(SFTParams, SelectionParams):
    balance_field: str | None = "label"
    """class-balanced batches by default: a majority-label policy gives RL no reward variance"""


class ModerationWarmStart(ValidationSelection, SFTStage):
    """Scored once per pass over the data unless ``select_every`` says otherwise."""

    def run(self, context):
        self.context = context
        self.prepare_selection()
        self.pass_steps = max(1, round(len(self.examples(self.params.split)) / self.params.batch_size))
        return super().run(context)

    def after_step(self, step: int) -> None:
        every = self.params.select_every or self.pass_steps
        if step % every == 0 or step == self.total_steps:
            self.select_at(step)

    def before_save(self) -> dict[str, Any]:
        p = self.params
        best = self.finish_selection()
        answered = [label for label, share in best["label_shares"].items() if label != "none" and share > 0]
        if len(answered) < 2:
            raise ReasonRLError(
                f"stage {self.context.stage_id!r}: every scored checkpoint answers one label at most (best, step "
                f"{best['step']}: {best['label_shares']} on {len(self.scoring)} {p.select_split} examples). RL "
                f"from it would see no reward variance. Fix: more warm-start examples or steps (epochs), a "
                f"different lr, or balance_field: label if it was turned off. The scores of every checkpoint "
                f"are in {self.context.stage_dir / 'selection.json'}.")
        return self.selection_summary(best)


class MoreSFTParams(WarmStartParams):
    select_constraint: ConstraintRef | None = None
    """a decoding constraint for the scoring (e.g. verdict_close, as moderation_rl scores under its own)"""


class ModerationMoreSFT(ModerationWarmStart):
    """``moderation_more_sft``: label-only SFT from a model that already classifies, scored at its
    start too and kept there when no step beats it: more SFT on the footing of ``moderation_rl``, as
    a control beside it. (A stage of its own, so the warm start's params, and with them the study
    ledgers' fingerprints, stay as they were.)"""

    def run(self, context):
        p = self.params
        self.constraint = context.build(p.select_constraint) if p.select_constraint else None
        return super().run(context)

    def before_steps(self) -> None:
        self.select_at(0)
