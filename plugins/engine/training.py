"""What the three trainers share: accelerate setup, optimiser, schedule, checkpoints."""

from __future__ import annotations

import math
import os
import random
from typing import Any, Literal

import torch
from pydantic import Field

from reasonrl.core.config import DatasetRef
from reasonrl.core.contracts import StageContext
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.registry import Params
from reasonrl.plugins.engine.models import ModelSpec, load_policy
from reasonrl.plugins.engine.saving import CheckpointsAndSaves
from reasonrl.plugins.engine.sharding import Sharding


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


class Trainer(Sharding, CheckpointsAndSaves):
    """Base of the ``lm``, ``sft`` and ``rl`` stages."""

    distributed = True  # every process runs it (data parallel); other stages run on the main process only

    params: TrainingParams

    def __init__(self, params: TrainingParams) -> None:
        self.params = params

    def resumed_extras(self) -> dict[str, Any]:
        """What the resumed checkpoint stored besides the step (empty on a fresh start): a stage keeps
        its running state (``self.state``) there, and checkpoints it again as it goes."""
        return {k: v for k, v in getattr(self, "resumed_state", {}).items() if k not in ("step", "fingerprint")}

    def before_steps(self) -> None:
        """Called once before the first step of a fresh (not resumed) stage; a subclass may score the start."""

    def after_step(self, step: int) -> None:
        """Called after each completed step (a subclass may evaluate; ``self.state`` is checkpointed)."""

    def before_save(self) -> dict[str, Any]:
        """Called once training ends or stops, before the model is saved; returns extra summary fields."""
        return {}

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

    def shard(self, batch: list) -> list:
        """This rank's share of a global batch (all ranks draw the same global batch)."""
        if len(batch) % self.world:
            raise ReasonRLError(f"batch size {len(batch)} does not split over {self.world} processes; "
                                f"use a multiple of {self.world}")
        return batch[self.rank::self.world]

    def optimizer_step(self) -> float:
        if not self.uses_deepspeed:  # DeepSpeed clips inside its engine step
            norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.params.max_grad_norm)
        else:
            norm = float("nan")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

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
