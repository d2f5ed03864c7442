"""Decoding on a static KV cache, so one decode step can be compiled and captured.

On a GPU a small model's decode step is bound by kernel launches; a step whose shapes never
change can be captured once as a CUDA graph (``torch.compile(mode="reduce-overhead")``) and
replayed. Shapes come from buckets: rows rounded up to a power of two, cache length to a
multiple of ``LENGTH_BUCKET``, so a run captures a few graphs, not one per step. Rows do not
leave the batch when they finish (that would change the shapes); their tokens are dropped,
and they stop advancing their constraints, exactly as the eager loop's retired rows.
"""

from __future__ import annotations

import inspect
import math

import torch

from reasonrl.core.errors import ReasonRLError

LENGTH_BUCKET = 256


def row_bucket(rows: int) -> int:
    """The rows a step runs: ``rows`` rounded up to a power of two."""
    return 1 << max(0, math.ceil(math.log2(max(rows, 1))))


def length_bucket(tokens: int) -> int:
    """Cache positions held: ``tokens`` rounded up to a multiple of ``LENGTH_BUCKET``."""
    return LENGTH_BUCKET * math.ceil(tokens / LENGTH_BUCKET)


def layer_states(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a transformers dynamic cache, [rows, heads, length, dim]."""
    return [(layer.keys, layer.values) for layer in cache.layers]


class StaticDecoder:
    """Static caches and decode steps, one per (rows, length) bucket, kept across calls: a
    compiled step is captured the first time a bucket is used and replayed after."""

    def __init__(self, model, compiled: bool) -> None:
        self.model = model
        self.compiled = compiled
        self.caches: dict[tuple[int, int], object] = {}
        self.steps: dict[tuple[int, int], object] = {}

    def start(self, prefill_cache, attention: torch.Tensor, new_tokens: int) -> "StaticRun":
        """A run whose cache holds the prefill's states (rows padded to the bucket with copies
        of row 0, masked out) and room for ``new_tokens`` more."""
        rows, filled = attention.shape
        key = (row_bucket(rows), length_bucket(filled + new_tokens))
        cache = self._cache(key)
        pad = torch.zeros(key[0] - rows, dtype=torch.long, device=attention.device)
        order = torch.cat([torch.arange(rows, device=attention.device), pad])
        for index, (keys, values) in enumerate(layer_states(prefill_cache)):
            cache.update(keys[order], values[order], index,
                         {"cache_position": torch.arange(filled, device=attention.device)})
        mask = torch.zeros(key, dtype=torch.long, device=attention.device)
        mask[:rows, :filled] = attention
        return StaticRun(self._step(key), cache, mask, filled, rows)

    def _cache(self, key: tuple[int, int]):
        from transformers import StaticCache

        cache = self.caches.get(key)
        if cache is None:
            cache = self.caches[key] = StaticCache(config=self.model.config, max_cache_len=key[1])
        else:
            cache.reset()
        return cache

    def _step(self, key: tuple[int, int]):
        if key not in self.steps:
            step = self._forward
            if self.compiled:
                step = _explained(torch.compile(step, mode="reduce-overhead", dynamic=False))
            self.steps[key] = step
        return self.steps[key]

    def _forward(self, cache, token, attention, position, cache_position):
        extra = {"cache_position": cache_position} if _takes_cache_position(self.model) else {}
        out = self.model(input_ids=token, attention_mask=attention, position_ids=position, cache=cache,
                         use_cache=True, **extra)
        return out.logits[:, -1]


class StaticRun:
    """One chunk's decode on a bucket's cache: ``next_logits`` feeds every row's token at the
    next cache position and returns the real rows' logits."""

    def __init__(self, step, cache, mask: torch.Tensor, filled: int, rows: int) -> None:
        self.step, self.cache, self.mask, self.filled, self.rows = step, cache, mask, filled, rows
        self.position = mask.sum(dim=1, keepdim=True)

    def next_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens``: one per real row (finished rows' are ignored by the caller)."""
        batch = torch.zeros((self.mask.shape[0], 1), dtype=torch.long, device=tokens.device)
        batch[:self.rows, 0] = tokens
        self.mask[:, self.filled] = 1
        cache_position = torch.tensor([self.filled], device=tokens.device)
        logits = self.step(self.cache, batch, self.mask, self.position, cache_position)
        self.filled += 1
        self.position = self.position + 1
        return logits[:self.rows]


def _explained(step):
    """``step``, whose compilation errors say which setting avoids compiling."""
    def run(*args):
        try:
            return step(*args)
        except Exception as exc:  # inductor/dynamo raise many types; the message is what helps
            if "torch._dynamo" not in type(exc).__module__ and "torch._inductor" not in type(exc).__module__:
                raise
            raise ReasonRLError(f"compiling the decode step failed ({type(exc).__name__}: {str(exc)[:300]}); set "
                                f"rollout.params.compile: static (the same decode, not compiled) or off") from exc
    return run


def _takes_cache_position(model) -> bool:
    """transformers releases before 5.2x address a static cache by ``cache_position``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache_position" in inspect.signature(base.forward).parameters
