"""A colocated vLLM rollout engine (optional extra ``reasonrl[vllm]``, GPUs).

vLLM is imported on first use only. The engine starts from the policy saved to a
scratch folder, and before each generation the current policy weights are pushed into
vLLM's model in place (no reload), so rollouts always come from the latest update.
Same contract as ``hf``: G completions per prompt with per-token log-probs.
"""

from __future__ import annotations

import os
import tempfile
from typing import Sequence

import torch
from pydantic import Field

from reasonrl.core.contracts import Rollouts
from reasonrl.core.errors import ReasonRLError
from reasonrl.plugins.rollout import SamplingParams


class VLLMParams(SamplingParams):
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    """share of GPU memory vLLM may take (the rest trains)"""
    dtype: str = "bfloat16"
    """vLLM's weight and activation dtype"""


def _seed_from(generator) -> int | None:
    """A per-request vLLM seed drawn from a torch generator (None: vLLM's own randomness)."""
    if generator is None:
        return None
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))


class VLLMRolloutEngine:
    """Sampling with vLLM next to the trainer on the same GPU; weights synced every call."""

    def __init__(self, params: VLLMParams) -> None:
        self.params = params
        self._llm = None
        self._scratch = None

    @property
    def temperature(self) -> float:
        return self.params.temperature

    def _engine(self, model, tokenizer):
        if self._llm is not None:
            return self._llm
        try:
            # in-process engine core: weight pushes reach the model directly
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            from vllm import LLM
        except ImportError as exc:
            raise ReasonRLError("rollout engine 'vllm' needs vLLM on a CUDA machine: pip install 'reasonrl[vllm]'; "
                                "use rollout: hf on CPU") from exc
        self._scratch = tempfile.TemporaryDirectory(prefix="reasonrl-vllm-")
        model.save_pretrained(self._scratch.name, safe_serialization=True)
        tokenizer.save_pretrained(self._scratch.name)
        self._llm = LLM(model=self._scratch.name, dtype=self.params.dtype, enable_prefix_caching=True,
                        gpu_memory_utilization=self.params.gpu_memory_utilization, seed=0)
        return self._llm

    def push_weights(self, model) -> None:
        weights = [(name, tensor.detach()) for name, tensor in model.state_dict().items()]

        def load(worker):
            worker.model_runner.model.load_weights(weights=weights)

        self._llm.collective_rpc(load)

    def generate(self, model, tokenizer, prompts: Sequence[str], group_size: int, generator=None,
                 constraints=None) -> Rollouts:
        if constraints is not None:
            raise ReasonRLError("rollout engine 'vllm' does not apply decoding constraints (e.g. sid_trie); "
                                "use rollout: {name: hf} with a constraint, or drop the constraint")
        llm = self._engine(model, tokenizer)  # first: it explains a missing vLLM
        from vllm import SamplingParams

        self.push_weights(model)
        p = self.params
        generators = generator if isinstance(generator, (list, tuple)) else [generator] * len(prompts)
        sampling = [SamplingParams(n=group_size, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k or -1,
                                   max_tokens=p.max_new_tokens, stop=p.stop_strings or None, logprobs=0,
                                   seed=_seed_from(g), include_stop_str_in_output=True) for g in generators]
        outputs = llm.generate(list(prompts), sampling, use_tqdm=False)
        return self._to_rollouts(tokenizer, prompts, outputs, group_size)

    def _to_rollouts(self, tokenizer, prompts, outputs, group_size) -> Rollouts:
        samples = [c for out in outputs for c in out.outputs]
        width = max(1, max(len(c.token_ids) for c in samples))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids = torch.full((len(samples), width), pad, dtype=torch.long)
        mask = torch.zeros((len(samples), width), dtype=torch.long)
        logprobs = torch.zeros((len(samples), width))
        for row, sample in enumerate(samples):
            n = len(sample.token_ids)
            ids[row, :n] = torch.tensor(sample.token_ids)
            mask[row, :n] = 1
            logprobs[row, :n] = torch.tensor([step[tok].logprob for tok, step in zip(sample.token_ids, sample.logprobs)])
        truncated = torch.tensor([s.finish_reason == "length" for s in samples])
        prompt_ids = [torch.tensor(out.prompt_token_ids) for out in outputs]
        return Rollouts(prompt_ids, ids, mask, logprobs, truncated, [s.text for s in samples], group_size)
