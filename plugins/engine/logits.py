"""Log-probs of chosen tokens without a [rows, tokens, vocabulary] logits tensor.

A policy's logits of a long answer are the largest tensor of a training step (16 rows x 256
tokens x 49,152 entries is 805 MB in fp32, twice that with its gradient). When a policy's
logits are exactly ``head(decoder hidden state)``, the decoder runs once and the vocabulary
projection runs over chunks of tokens: each chunk's logits live only while its log-probs are
taken and are recomputed in the backward pass (one extra head matmul per chunk, no stored
logits)."""

from __future__ import annotations

import inspect
from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

# model types whose causal-LM forward is decoder -> lm_head with nothing in between
# (no logit scaling or soft-capping); others keep the plain forward
PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
CHUNK_BYTES = 64 * 2**20  # fp32 logits per chunk


class SplitPolicy(NamedTuple):
    decoder: torch.nn.Module
    head: torch.nn.Module

    @property
    def cache_key(self) -> str:
        """transformers 5.x renamed ``past_key_values`` to ``cache``."""
        return "cache" if "cache" in inspect.signature(self.decoder.forward).parameters else "past_key_values"

    def hidden(self, **inputs) -> tuple[torch.Tensor, object]:
        """The decoder's last hidden states (after its final norm) and the returned cache."""
        cache = inputs.pop("cache", None)
        if cache is not None:
            inputs[self.cache_key] = cache
        out = self.decoder(**inputs, use_cache=cache is not None)
        return out.last_hidden_state, getattr(out, self.cache_key, None) if cache is not None else None


def split_policy(model) -> SplitPolicy | None:
    """The policy as (decoder, head) when its logits are ``head(decoder(...))`` and calling the
    decoder directly bypasses nothing: a transformers model itself (not inside DDP, FSDP or
    DeepSpeed, whose own forward gathers weights or prepares gradient reduction), no sharded
    weights (FSDP2 gathers the top-level ones in the model's forward) and no prompt-learning
    adapter. Otherwise None: use the plain forward."""
    from transformers import PreTrainedModel

    base = model
    if hasattr(model, "get_base_model"):
        config = getattr(model, "active_peft_config", None)
        if config is not None and getattr(config, "is_prompt_learning", False):
            return None
        base = model.get_base_model()
    if not isinstance(base, PreTrainedModel) or base.config.model_type not in PLAIN_HEAD_TYPES:
        return None
    if any(type(p).__name__ == "DTensor" for p in base.parameters()):
        return None
    return SplitPolicy(base.get_decoder(), base.get_output_embeddings())


def chunk_tokens(vocabulary: int) -> int:
    return max(16, CHUNK_BYTES // (4 * vocabulary))


def _chunk_logprobs(head, hidden, ids, temperature):
    logits = head(hidden).float()
    if temperature != 1.0:
        logits = logits / temperature
    return logits.gather(-1, ids[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _chunk_gather(head, hidden, ids):
    return head(hidden).gather(-1, ids)


def _by_chunks(fn, head, hidden, ids, *args) -> torch.Tensor:
    """``fn`` over chunks of rows of ``hidden`` [N, H] / ``ids`` [N, ...], checkpointed when
    gradients are on so that no chunk's logits are kept for the backward pass."""
    size = chunk_tokens(getattr(head, "out_features", None) or head.weight.shape[0])
    pieces = []
    for start in range(0, hidden.shape[0], size):
        part = (head, hidden[start:start + size], ids[start:start + size], *args)
        pieces.append(checkpoint(fn, *part, use_reentrant=False) if torch.is_grad_enabled() else fn(*part))
    return torch.cat(pieces) if pieces else hidden.new_zeros((0,) + ids.shape[1:])


def chosen_logprobs(head, hidden: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(head(hidden) / T)[ids], shaped like ``ids``; ``hidden`` is [..., H]."""
    flat = _by_chunks(_chunk_logprobs, head, hidden.reshape(-1, hidden.shape[-1]), ids.reshape(-1), temperature)
    return flat.reshape(ids.shape)


def chosen_logits(head, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """head(hidden)[row, ids[row]] for ``hidden`` [N, H] and ``ids`` [N, k]: [N, k]."""
    return _by_chunks(_chunk_gather, head, hidden, ids)
