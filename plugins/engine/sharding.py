"""How a trainer spreads over processes: accelerate's DeepSpeed and FSDP plugins from the stage's
params, and the checks that refuse combinations that would train wrongly."""

from __future__ import annotations

import os

import torch

from reasonrl.core.errors import ReasonRLError


class Sharding:
    """Mixin of ``Trainer`` (reads its params and accelerator)."""

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
