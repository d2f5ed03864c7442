"""What a trainer writes: periodic checkpoints (and resuming from them), the final model with its
inference manifest, snapshots, and the fallback that keeps finished training when a save fails."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from reasonrl.core.errors import ReasonRLError
from reasonrl.plugins.engine.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from reasonrl.plugins.engine.manifest import DecodeSettings, write_training_manifest
from reasonrl.plugins.engine.models import MODEL_DIR, load_policy, save_policy

CHECKPOINT_DIR = "checkpoint"
# a full disk surfaces as OSError from plain writes and as SafetensorError from safetensors
SAVE_ERRORS = (OSError, SafetensorError)


class CheckpointsAndSaves:
    """Mixin of ``Trainer`` (reads its accelerator, model, optimizer, scheduler and context)."""

    def full_model(self) -> torch.nn.Module:
        """The trained policy with whole weights (gathered from every process under FSDP).
        Every process must call it; only the main process's copy is complete."""
        model = self.accelerator.unwrap_model(self.model)
        if not self.sharded:
            return model
        state = self.accelerator.get_state_dict(self.model)  # collective
        if not self.accelerator.is_main_process:
            return model
        whole, _ = load_policy(self.params.model.model_copy(update={"dtype": "float32"}), self.context.run_dir,
                               self.seed)
        whole.load_state_dict(state)
        return whole

    @property
    def checkpoint_dir(self) -> Path:
        return self.context.stage_dir / CHECKPOINT_DIR

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.accelerator.unwrap_model(self.model), **self.extra}

    def _resume(self) -> int:
        if not has_checkpoint(self.checkpoint_dir):
            return 0
        state = load_checkpoint(self.checkpoint_dir, self.modules(), self.optimizer, self.scheduler)
        if state.get("fingerprint") != self.context.fingerprint:
            raise ReasonRLError(
                f"stage {self.context.stage_id!r}: the checkpoint in {self.checkpoint_dir} (step {state['step']}) "
                f"was written under another config or other inputs than the ones given now; resuming would "
                f"bring the old settings back. Rerun with --force {self.context.stage_id} to start this stage "
                f"over, or give the config a new run_name.")
        print(f"    resuming {self.context.stage_id} from step {state['step']} ({self.checkpoint_dir})")
        self.context.log(int(state["step"]), {"resumed_from_step": float(state["step"])})
        self.resumed_state = state
        return int(state["step"])

    def maybe_checkpoint(self, step: int, state: dict[str, Any] | None = None) -> None:
        every = self.params.checkpoint_every
        # the final step needs no checkpoint: the stage saves its model and marks itself done
        if every and step % every == 0 and step < self.total_steps:
            self.checkpoint(step, state)

    def checkpoint(self, step: int, state: dict[str, Any] | None = None) -> None:
        if self.accelerator.is_main_process:
            save_checkpoint(self.checkpoint_dir, self.modules(), self.optimizer, self.scheduler,
                            {"step": step, "fingerprint": self.context.fingerprint, **(state or {})})

    def check_ranks_agree(self) -> None:
        """Data-parallel ranks must hold identical weights; fail loudly if they drifted."""
        if self.world == 1 or self.sharded:  # FSDP ranks hold different shards by design
            return
        flat = torch.cat([p.detach().float().flatten() for p in self.model.parameters()])
        fingerprint = torch.stack([flat.sum(), flat.norm()])[None]
        gathered = self.accelerator.gather(fingerprint)
        if not torch.allclose(gathered, gathered[:1].expand_as(gathered), rtol=1e-6, atol=1e-6):
            raise ReasonRLError(f"data-parallel ranks hold different weights: {gathered.tolist()}")

    def save_model(self, state: dict[str, Any] | None = None) -> Path:
        """Save the trained model; if that fails, keep the finished training as a checkpoint first.

        ``state`` is what the stage needs to report after a resume (its history)."""
        self.check_ranks_agree()
        folder = self.context.stage_dir / MODEL_DIR
        if not self.params.save_model:
            return folder
        self.accelerator.wait_for_everyone()
        model = self.full_model()
        if not self.accelerator.is_main_process:
            return folder
        try:
            saved = save_policy(model, self.tokenizer, folder)
            write_training_manifest(saved, self.decode_settings())
            return saved
        except SAVE_ERRORS as exc:
            self._keep_finished_training(state, exc)

    def save_snapshot(self, step: int) -> Path:
        """The policy after ``step`` steps as a loadable model (stage id ``<stage>/snapshots/step<k>``),
        moved into place whole, so a kill never leaves half a snapshot."""
        folder = self.context.stage_dir / "snapshots" / f"step{step}"
        model = self.full_model()
        if self.accelerator.is_main_process and not folder.exists():
            partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            write_training_manifest(save_policy(model, self.tokenizer, partial / MODEL_DIR), self.decode_settings())
            partial.rename(folder)
        return folder

    def decode_settings(self) -> DecodeSettings:
        """How the saved model expects to be queried (a stage with rollouts adds its constraint)."""
        return DecodeSettings(stage=self.context.stage_id, chat_template=getattr(self.params, "chat_template", False),
                              origin=f"training {self.context.stage_id}")

    def _keep_finished_training(self, state: dict[str, Any] | None, exc: Exception) -> None:
        folder = self.context.stage_dir / MODEL_DIR
        try:
            self.checkpoint(self.total_steps, state)
        except SAVE_ERRORS:
            kept = "the final checkpoint could not be written either; the last periodic one is kept"
        else:
            kept = f"the trained weights are kept as a checkpoint of step {self.total_steps} in {self.checkpoint_dir}"
        raise ReasonRLError(f"stage {self.context.stage_id!r}: saving the model to {folder} failed ({exc}); {kept}. "
                            f"Fix the folder and rerun: the stage resumes and only saves.") from exc
