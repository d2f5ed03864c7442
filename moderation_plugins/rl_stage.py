"""The ``moderation_rl`` stage: the ``rl`` stage that keeps its best policy by validation score.

RL on a warm start that already classifies can move the greedy answers either way within a
few steps. This stage scores the starting policy (step 0) and the policy every
``select_every`` steps on a held-out split, and saves the best of them: the start itself
when no RL step beat it, so the stage never ends below its start on that split.
``selection.json`` in the stage folder holds every score.
"""

from __future__ import annotations

from typing import Any

from reasonrl.moderation_plugins.selection import SelectionParams, ValidationSelection
from reasonrl.plugins.engine.rl import RLParams, RLStage


class ModerationRLParams(RLParams, SelectionParams):
    """``select_every`` unset: the start and the last step are scored."""


class ModerationRL(ValidationSelection, RLStage):
    def run(self, context):
        self.context = context
        self.prepare_selection()
        return super().run(context)

    def before_steps(self) -> None:
        self.select_at(0)

    def after_step(self, step: int) -> None:
        every = self.params.select_every or self.params.steps
        if step % every == 0 or step == self.params.steps:
            self.select_at(step)

    def before_save(self) -> dict[str, Any]:
        return self.selection_summary(self.finish_selection())
