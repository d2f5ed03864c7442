"""What the three trainers share: accelerate setup, optimiser, schedule, checkpoints."""

from __future__ import annotations

import math
import os
import random
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from safetensors import SafetensorError

from reasonrl.core.config import DatasetRef
from reasonrl.core.contracts import StageContext
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.registry import Params
from reasonrl.plugins.engine.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from reasonrl.plugins.engine.manifest import DecodeSettings, write_training_manifest
from reasonrl.plugins.engine.models import MODEL_DIR, ModelSpec, load_policy, save_policy

# a full disk surfaces as OSError from plain writes and as SafetensorError from safetensors
SAVE_ERRORS = (OSError, SafetensorError)


class DeepSpeedParams(Params):
    """DeepSpeed ZeRO through accelerate (extra: deepspeed)."""

    zero_stage: Literal[1, 2, 3] = 2
    """ZeRO stage: 1 shards optimizer states, 2 also gradients, 3 also weights"""
    offload_optimizer: bool = False
    """keep optimizer states in CPU memory"""


class FSDPParams(Params):
    """Fully sharded data parallel (FSDP2) through accelerate: weights, gradients and optimizer
    states are split over the processes and gathered layer by layer when needed."""

    reshard_after_forward: bool = True
    """free each layer's gathered weights after its forward pass (least memory); false keeps them
    until the backward pass (faster, ZeRO-2-like)"""
    cpu_offload: bool = False
    """keep the sharded weights and optimizer states in CPU memory"""


class TrainingParams(Params):
    """What every trainer shares: optimisation, schedule, checkpoints."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    """the model to train"""
    dataset: DatasetRef
    """the dataset to train on"""
    chunked_logits: bool = Field(False, description=(
        "project to the vocabulary in chunks, recomputed in backward: no [rows, tokens, vocabulary] logits "
        "tensor (-26% peak memory with 256-token answers on SmolLM2, about +4% time); off by default because "
        "its float rounding differs, and small models amplify that into different runs"))
    split: str = "train"
    """the dataset split to train on"""
    lr: float = Field(1e-5, gt=0)
    """peak learning rate (AdamW)"""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay"""
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    """learning-rate schedule after warmup"""
    warmup_steps: int = Field(0, ge=0)
    """steps of linear warmup from 0 to lr"""
    max_grad_norm: float = Field(1.0, gt=0)
    """gradients are clipped to this global norm"""
    gradient_accumulation: int = Field(1, gt=0)
    """micro-steps summed into one optimizer step"""
    mixed_precision: Literal["no", "bf16", "fp16"] | None = Field(
        None, description="autocast in the trainer; unset: what accelerate's config or environment says, "
                          "else bf16 on a capable GPU when model.dtype is auto")
    gradient_checkpointing: bool = False
    """recompute activations in the backward pass: less memory for about a third more compute"""
    deepspeed: DeepSpeedParams | None = Field(None, description="ZeRO sharding; sft and lm stages (rl: use fsdp)")
    fsdp: FSDPParams | None = Field(None, description="FSDP2 sharding over the launched processes; sft, lm and rl "
                                    "(also switched on by an accelerate config with FSDP)")
    checkpoint_every: int = Field(0, ge=0, description="steps between resume checkpoints; 0 = none")
    save_model: bool = Field(True, description="save the trained model (off only for benchmarks)")
    seed_offset: int = 0
    """added to the run seed for this stage (replicates with the same config)"""
    progress: bool = True
    """show a progress bar"""


CHECKPOINT_DIR = "checkpoint"


def step_seed(seed: int, step: int, salt: int = 0) -> int:
    """A seed derived from (run seed, step): resuming at step k replays step k exactly."""
    return (seed * 1_000_003 + step * 7_919 + salt) % (2**31 - 1)


def seed_all(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Seed Python and torch; returns a generator on ``device`` (where the sampling happens)."""
    random.seed(seed)
    torch.manual_seed(seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def lr_lambda(schedule: str, warmup: int, total: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return 1.0 - progress
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


def make_adamw(parameters, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with the fused kernel where this torch build has it (CPU included): one
    pass over the weights instead of several."""
    try:
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


def training_precision(dtype: str, mixed_precision: str | None) -> tuple[str, str | None]:
    """(weights' dtype, accelerate mixed precision) for a trainer.

    ``dtype: auto`` trains float32 master weights; on a bf16-capable GPU the forward and
    backward passes autocast to bf16 unless the user or accelerate's config (which
    ``accelerate launch`` passes as ACCELERATE_MIXED_PRECISION) says otherwise. Pure bf16
    weights would round away updates smaller than 1/256 of a weight, i.e. most RL steps.
    An explicit dtype is taken as asked."""
    if dtype != "auto":
        return dtype, mixed_precision
    if mixed_precision is None and "ACCELERATE_MIXED_PRECISION" not in os.environ \
            and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        mixed_precision = "bf16"
    return "float32", mixed_precision


def enable_gradient_checkpointing(model) -> None:
    """Activation recomputation in training mode (rollouts run in eval mode, with their KV cache)."""
    if not getattr(model, "supports_gradient_checkpointing", True):
        raise ReasonRLError(f"gradient_checkpointing: {type(model).__name__} does not support it; set it to false")
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()  # frozen embeddings under LoRA still pass gradients on


class Trainer:
    """Base of the ``lm``, ``sft`` and ``rl`` stages."""

    distributed = True  # every process runs it (data parallel); other stages run on the main process only

    params: TrainingParams

    def __init__(self, params: TrainingParams) -> None:
        self.params = params

    def setup(self, context: StageContext, total_steps: int, make_extra=None):
        """Load the policy (and ``make_extra(model)`` modules such as a value head), the
        optimiser and schedule, then resume from the stage's checkpoint if there is one."""
        from accelerate import Accelerator

        params = self.params
        self.context = context
        self.seed = context.seed + params.seed_offset
        seed_all(self.seed)
        weights, mixed_precision = training_precision(params.model.dtype, params.mixed_precision)
        self.accelerator = Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available(),
                                       deepspeed_plugin=self._deepspeed_plugin(), fsdp_plugin=self._fsdp_plugin())
        self._check_sharding_options(make_extra)
        self.accelerator.wait_for_everyone()  # the main process may still be writing an earlier stage's outputs
        self.model, self.tokenizer = load_policy(params.model.model_copy(update={"dtype": weights}),
                                                 context.run_dir, self.seed)
        if params.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        self.extra = {name: module.to(self.accelerator.device)
                      for name, module in (make_extra(self.model) if make_extra else {}).items()}
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        for module in self.extra.values():
            trainable += list(module.parameters())
        self.optimizer = make_adamw(trainable, params.lr, params.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(params.schedule, params.warmup_steps, total_steps))
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.total_steps = total_steps
        self.start_step = self._resume()

    def _deepspeed_plugin(self):
        ds = self.params.deepspeed
        if ds is None:
            return None
        try:
            from accelerate.utils import DeepSpeedPlugin
        except ImportError as exc:  # pragma: no cover - accelerate always ships it
            raise ReasonRLError("deepspeed needs accelerate's DeepSpeed plugin") from exc
        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29517"), ("RANK", "0"),
                           ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
            os.environ.setdefault(key, value)  # a single process needs a process group too
        plugin = DeepSpeedPlugin(zero_stage=ds.zero_stage, gradient_clipping=self.params.max_grad_norm,
                                 gradient_accumulation_steps=self.params.gradient_accumulation,
                                 offload_optimizer_device="cpu" if ds.offload_optimizer else "none")
        plugin.deepspeed_config["zero_allow_untested_optimizer"] = True
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = max(
            1, getattr(self.params, "batch_size", 1) // self.params.gradient_accumulation)
        return plugin

    def _fsdp_plugin(self):
        if self.params.fsdp is None:
            return None
        if self.params.deepspeed is not None:
            raise ReasonRLError("deepspeed and fsdp are both set; choose one way to shard")
        from accelerate.utils import FullyShardedDataParallelPlugin

        # each decoder layer is one sharded unit (the model's _no_split_modules name them)
        return FullyShardedDataParallelPlugin(
            fsdp_version=2, reshard_after_forward=self.params.fsdp.reshard_after_forward,
            cpu_offload=self.params.fsdp.cpu_offload, auto_wrap_policy="transformer_based_wrap",
            state_dict_type="FULL_STATE_DICT", cpu_ram_efficient_loading=False)

    @property
    def uses_deepspeed(self) -> bool:
        """True when DeepSpeed runs the step (set in the stage or by accelerate's config)."""
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type == DistributedType.DEEPSPEED

    @property
    def sharded(self) -> bool:
        """True under FSDP: each process holds a shard of the weights, not a replica."""
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type == DistributedType.FSDP

    def _check_sharding_options(self, make_extra) -> None:
        if self.params.fsdp is not None and not self.sharded:
            raise ReasonRLError(
                f"stage {self.context.stage_id!r}: fsdp is set, but accelerate shards only over GPU processes and "
                f"this run is {self.accelerator.distributed_type.value} with {self.accelerator.num_processes} "
                f"process(es). Launch on GPUs with `accelerate launch --num_processes N -m reasonrl run ...`, or "
                f"drop fsdp here")
        if not self.sharded:
            return
        if self.accelerator.is_main_process:
            print(f"    {self.context.stage_id}: FSDP over {self.accelerator.num_processes} process(es); "
                  f"each holds 1/{self.accelerator.num_processes} of the weights and optimizer states")
        if self.params.checkpoint_every:
            raise ReasonRLError(f"stage {self.context.stage_id!r}: checkpoint_every={self.params.checkpoint_every} "
                                f"with FSDP: resume checkpoints hold whole weights and optimizer states, which FSDP "
                                f"keeps sharded; set checkpoint_every: 0 (the finished stage still saves its model) "
                                f"or train with DDP or DeepSpeed")
        if make_extra is not None:
            raise ReasonRLError(f"stage {self.context.stage_id!r}: FSDP shards the policy only, and this stage "
                                f"trains extra modules next to it (ppo's value head); use DDP, or an optimizer "
                                f"without a critic (grpo, dapo)")

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

    def shard(self, batch: list) -> list:
        """This rank's share of a global batch (all ranks draw the same global batch)."""
        if len(batch) % self.world:
            raise ReasonRLError(f"batch size {len(batch)} does not split over {self.world} processes; "
                                f"use a multiple of {self.world}")
        return batch[self.rank::self.world]

    def maybe_checkpoint(self, step: int, state: dict[str, Any] | None = None) -> None:
        every = self.params.checkpoint_every
        # the final step needs no checkpoint: the stage saves its model and marks itself done
        if every and step % every == 0 and step < self.total_steps:
            self.checkpoint(step, state)

    def checkpoint(self, step: int, state: dict[str, Any] | None = None) -> None:
        if self.accelerator.is_main_process:
            save_checkpoint(self.checkpoint_dir, self.modules(), self.optimizer, self.scheduler,
                            {"step": step, "fingerprint": self.context.fingerprint, **(state or {})})

    def optimizer_step(self) -> float:
        if not self.uses_deepspeed:  # DeepSpeed clips inside its engine step
            norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.params.max_grad_norm)
        else:
            norm = float("nan")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

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

    def progress(self, desc: str):
        from tqdm.auto import tqdm

        return tqdm(total=self.total_steps, initial=self.start_step, desc=desc,
                    disable=not (self.params.progress and self.accelerator.is_main_process),
                    dynamic_ncols=True)

    def examples(self, split: str, fields: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """The dataset's ``split``, checked to be non-empty and to hold ``fields`` in every row."""
        name = self.params.dataset.name
        dataset = self.context.build(self.params.dataset)
        splits = dataset.splits()
        if split not in splits:
            raise ReasonRLError(f"dataset {name!r} has no split {split!r}; it has {sorted(splits)}")
        rows = splits[split]
        if not rows:
            raise ReasonRLError(f"stage {self.context.stage_id!r}: split {split!r} of dataset {name!r} is empty; "
                                f"check the dataset's params (sizes, paths) or choose another split")
        for index, row in enumerate(rows):
            missing = [f for f in fields if f not in row]
            if missing:
                raise ReasonRLError(
                    f"stage {self.context.stage_id!r}: row {index} of split {split!r} of dataset {name!r} has no "
                    f"field {missing[0]!r}; its fields are {sorted(row)}. Add the field to the data, or name the "
                    f"field that holds it in the stage's params (e.g. prompt_field).")
        return rows
