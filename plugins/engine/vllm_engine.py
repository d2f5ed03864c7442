"""A colocated vLLM rollout engine (optional extra ``reasonrl[vllm]``, GPUs).

vLLM is imported on first use only. The engine starts from the policy saved to a scratch
folder (LoRA merged in, so vLLM finds a plain model), and before each generation the
current policy weights are pushed into vLLM's model in place under the plain transformers
names (no reload), so rollouts always come from the latest update. Between rollouts vLLM
sleeps: its weights and KV cache give their GPU memory back to training.

Same contract as ``hf``: G completions per prompt with per-token log-probs. The log-probs
are vLLM's *processed* ones (after temperature and the decoding constraint), so they are of
the distribution the sampler drew from. vLLM's kernels still differ slightly from the
trainer's; the rl stage recomputes the old log-probs with the trainer and weights each
token by the truncated ratio min(pi_trainer / pi_vllm, importance_sampling_cap).
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Literal, Sequence

import torch
from pydantic import Field

from reasonrl.core.contracts import Rollouts
from reasonrl.core.errors import ReasonRLError
from reasonrl.plugins.engine.rollout import SamplingParams, mask_logits, model_device, tell_budget

CONSTRAINT_ARG = "reasonrl_constraint"


class VLLMParams(SamplingParams):
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    """share of GPU memory vLLM may take (the rest trains)"""
    dtype: str = "bfloat16"
    """vLLM's weight and activation dtype"""
    sleep: bool = True
    """release vLLM's weights and KV cache between rollouts, so the update has the memory"""
    compile: Literal["auto"] = Field("auto", description="not used: vLLM captures its own CUDA graphs")
    importance_sampling_cap: float = Field(2.0, ge=1.0)
    """truncation C of the per-token weight min(pi_trainer / pi_vllm, C) that corrects for the
    engines' numerical differences"""


def _seed_from(generator) -> int | None:
    """A per-request vLLM seed drawn from a torch generator (None: vLLM's own randomness)."""
    if generator is None:
        return None
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))


def _unwrap(model):
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def policy_weights(model) -> list[tuple[str, torch.Tensor]]:
    """The policy's weights under the names of the plain transformers model it wraps.

    A LoRA model's adapters are folded in out of place (W + scale * B A per adapted layer),
    so the training weights are untouched and no merge/unmerge rounding accumulates."""
    model = _unwrap(model)
    if not hasattr(model, "get_base_model"):
        return [(name, tensor.detach()) for name, tensor in model.state_dict().items()]
    if any("trainable_tokens" in name for name, _ in model.named_parameters()):
        # trained embedding rows live in their own layer: let peft fold everything into a copy
        merged = copy.deepcopy(model).merge_and_unload()
        return [(name, tensor.detach()) for name, tensor in merged.state_dict().items()]
    base = model.get_base_model()
    deltas = {f"{name}.weight": sum(module.get_delta_weight(a) for a in module.active_adapters)
              for name, module in base.named_modules()
              if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")}
    weights = []
    for name, tensor in base.state_dict().items():
        if "lora_" in name or ".original_module." in name:
            continue
        plain = name.replace(".base_layer", "").replace(".modules_to_save.default", "")
        tensor = tensor.detach()
        if plain in deltas:
            tensor = tensor + deltas[plain].to(tensor.dtype)
        weights.append((plain, tensor))
    return weights


def constraint_processor_class():
    """vLLM's batch-level logits processor that runs a reasonrl decoding constraint per request.

    Each request (each of the G samples) gets its own copy of the prompt's constraint, which
    ``SamplingParams.extra_args`` carries; it masks the logits as ``allowed()`` says."""
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

    class ConstraintProcessor(AdapterLogitsProcessor):
        def is_argmax_invariant(self) -> bool:
            return False

        def new_req_logits_processor(self, params):
            constraint = (params.extra_args or {}).get(CONSTRAINT_ARG)
            return None if constraint is None else RequestConstraint(copy.deepcopy(constraint))

    return ConstraintProcessor


class RequestConstraint:
    """One request's constraint state, fed the tokens generated since the last call."""

    def __init__(self, constraint) -> None:
        self.constraint, self.seen = constraint, 0

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        for token in output_ids[self.seen:]:
            self.constraint.advance(int(token))
        self.seen = len(output_ids)
        return mask_logits(logits, self.constraint.allowed())


class VLLMRolloutEngine:
    """Sampling with vLLM next to the trainer on the same GPU; weights synced every call."""

    needs_whole_weights = True  # pushes every weight each step: not with FSDP shards

    def __init__(self, params: VLLMParams) -> None:
        self.params = params
        self._llm = None
        self._scratch = None
        self._asleep = False

    @property
    def temperature(self) -> float:
        return self.params.temperature

    @property
    def importance_sampling_cap(self) -> float:
        return self.params.importance_sampling_cap

    def _engine(self, model, tokenizer):
        if self._llm is not None:
            return self._llm
        try:
            # in-process engine core: weight pushes and constraint objects reach it directly
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            from vllm import LLM
        except ImportError as exc:
            raise ReasonRLError("rollout engine 'vllm' needs vLLM on a CUDA machine: pip install 'reasonrl[vllm]'; "
                                "use rollout: hf on CPU") from exc
        from reasonrl.plugins.engine.models import save_policy

        self._scratch = tempfile.TemporaryDirectory(prefix="reasonrl-vllm-")
        save_policy(_unwrap(model), tokenizer, Path(self._scratch.name))  # LoRA merged: a plain model
        self._llm = LLM(model=self._scratch.name, dtype=self.params.dtype, enable_prefix_caching=True,
                        gpu_memory_utilization=self.params.gpu_memory_utilization, seed=0,
                        logprobs_mode="processed_logprobs", enable_sleep_mode=self.params.sleep,
                        logits_processors=[constraint_processor_class()])
        return self._llm

    def push_weights(self, model) -> None:
        weights = policy_weights(model)

        def load(worker):
            worker.model_runner.model.load_weights(weights=weights)

        self._llm.collective_rpc(load)

    def generate(self, model, tokenizer, prompts: Sequence[str], group_size: int, generator=None,
                 constraints=None) -> Rollouts:
        llm = self._engine(model, tokenizer)  # first: it explains a missing vLLM
        from vllm import SamplingParams

        if self._asleep:
            llm.wake_up()
            self._asleep = False
        self.push_weights(model)
        p = self.params
        generators = generator if isinstance(generator, (list, tuple)) else [generator] * len(prompts)
        rules = constraints if constraints is not None else [None] * len(prompts)
        tell_budget(rules, p.max_new_tokens)
        sampling = [SamplingParams(n=group_size, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k or -1,
                                   max_tokens=p.max_new_tokens, stop=p.stop_strings or None, logprobs=0,
                                   seed=_seed_from(g), include_stop_str_in_output=True,
                                   extra_args=None if rule is None else {CONSTRAINT_ARG: rule})
                    for g, rule in zip(generators, rules)]
        outputs = llm.generate(list(prompts), sampling, use_tqdm=False)
        if p.sleep:
            llm.sleep(level=2)  # weights are pushed again before the next rollout
            self._asleep = True
        return self._to_rollouts(tokenizer, outputs, model_device(model))

    def _to_rollouts(self, tokenizer, outputs, device) -> Rollouts:
        samples = [c for out in outputs for c in out.outputs]
        group_size = len(outputs[0].outputs)
        width = max(1, max(len(c.token_ids) for c in samples))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids = torch.full((len(samples), width), pad, dtype=torch.long, device=device)
        mask = torch.zeros((len(samples), width), dtype=torch.long, device=device)
        logprobs = torch.zeros((len(samples), width), device=device)
        for row, sample in enumerate(samples):
            n = len(sample.token_ids)
            ids[row, :n] = torch.tensor(sample.token_ids, device=device)
            mask[row, :n] = 1
            logprobs[row, :n] = torch.tensor([step[tok].logprob for tok, step in zip(sample.token_ids, sample.logprobs)],
                                             device=device)
        truncated = torch.tensor([s.finish_reason == "length" for s in samples], device=device)
        prompt_ids = [torch.tensor(out.prompt_token_ids, device=device) for out in outputs]
        return Rollouts(prompt_ids, ids, mask, logprobs, truncated, [s.text for s in samples], group_size)
