"""Scoring completions under a policy (the trainer's side of a rollout): token log-probs, values,
constrained renormalisation, and the checks that an engine's output keeps its contract."""

from __future__ import annotations

from typing import NamedTuple

import torch

from reasonrl.core.errors import ReasonRLError
from reasonrl.plugins.engine.logits import chosen_logits, chosen_logprobs, split_policy
from reasonrl.plugins.engine.rollout import (
    Excluding,
    _inner,
    _positions,
    forward_with_cache,
    left_pad,
    model_device,
    prefill,
)


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[ids] as gather - logsumexp: never materialises the
    log-softmax of the whole vocabulary (the big tensor of long answers)."""
    if logits.dtype != torch.float32:
        logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return logits.gather(-1, ids[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


class CompletionScores(NamedTuple):
    """What scores a completion: ``first`` [rows, V], the logits that predict its token 0, and
    ``after`` [rows, W, .], the outputs at its tokens (position t predicts token t + 1): logits,
    or hidden states that ``head`` projects chunk by chunk (see ``plugins/engine/logits.py``).
    ``states`` [rows, W, H]: the hidden state where each token is predicted (a value head's input)."""
    first: torch.Tensor
    after: torch.Tensor
    head: torch.nn.Module | None = None
    states: torch.Tensor | None = None

    def logprobs(self, ids: torch.Tensor, temperature: float) -> torch.Tensor:
        first = token_logprobs(self.first[:, None], ids[:, :1], temperature)
        if self.head is None:
            later = token_logprobs(self.after[:, :-1], ids[:, 1:], temperature)
        else:
            later = chosen_logprobs(self.head, self.after[:, :-1], ids[:, 1:], temperature)
        return torch.cat([first, later], dim=1)

    def logits_at(self, rows: torch.Tensor, positions: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """[cells, k] logits of ``ids`` at the positions that predict completion ``positions``."""
        before = (positions - 1).clamp(min=0)
        if self.head is None:
            later = self.after[rows[:, None], before[:, None], ids]
        else:
            later = chosen_logits(self.head, self.after[rows, before], ids)
        return torch.where((positions == 0)[:, None], self.first[rows[:, None], ids], later)


def completion_logprobs(model, prompt_ids, completion_ids, group_size, pad_id, temperature=1.0, value_head=None,
                        allowed=None, chunked=False):
    """Log-probs of the completion tokens (and values if ``value_head``), prompt run once per group.

    Differentiable: the prompt's KV cache is expanded across the group inside the
    graph, so the backward pass also covers each prompt once. ``allowed`` (per sample
    {position: token ids}) renormalises those positions over the tokens a decoding
    constraint allowed, the distribution the engine sampled from. ``chunked``: through the chunked
    vocabulary projection where the model allows it (``plugins/engine/logits.py``).
    """
    want_hidden = value_head is not None
    split = split_policy(model) if chunked else None
    score = _full_sequence_scores if recomputes_activations(model) else _shared_prompt_scores
    scores = score(model, split, prompt_ids, completion_ids, group_size, pad_id, want_hidden)
    logprobs = scores.logprobs(completion_ids, temperature)
    if allowed:
        logprobs = renormalise_constrained(logprobs, scores.logits_at, completion_ids, allowed, temperature)
    return logprobs, (value_head(scores.states).squeeze(-1) if want_hidden else None)


def _shared_prompt_scores(model, split, prompt_ids, completion_ids, group_size, pad_id, want_hidden):
    first_logits, cache, attention, last_prompt_hidden = prefill(model, prompt_ids, pad_id, group_size, want_hidden,
                                                                 last_only=split is not None)
    rows, width = completion_ids.shape
    attention = torch.cat([attention, torch.ones(rows, width, dtype=attention.dtype, device=attention.device)], dim=1)
    start = attention[:, :-width].sum(dim=1, keepdim=True)
    inputs = dict(input_ids=completion_ids, attention_mask=attention,
                  position_ids=start + torch.arange(width, device=attention.device)[None, :])
    if split is not None:
        after, _ = split.hidden(**inputs, cache=cache)
        hidden = after
    else:
        out, _ = forward_with_cache(model, cache, **inputs, output_hidden_states=want_hidden)
        after, hidden = out.logits, (out.hidden_states[-1] if want_hidden else None)
    states = None
    if want_hidden:  # the value of state t is read where token t is predicted: last prompt position, then completions
        states = torch.cat([last_prompt_hidden.repeat_interleave(group_size, dim=0)[:, None], hidden[:, :-1]], dim=1)
    return CompletionScores(first_logits, after, split.head if split else None, states)


def recomputes_activations(model) -> bool:
    """True while gradient checkpointing is on and the model trains: transformers then drops
    any KV cache passed in, so a prompt cannot be run once and shared."""
    base = _inner(model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # 5.x name first
        if hasattr(type(base), name):
            return bool(getattr(base, name)) and base.training
    return False


def renormalise_constrained(logprobs, logits_at, completion_ids, allowed, temperature):
    """``logprobs`` with each constrained position's value replaced by the token's log-prob
    under softmax over the tokens the constraint allowed there; ``logits_at(rows, positions, ids)``
    gives the logits at ``ids`` ([cells, k]) of the positions that predicted those cells.
    Out of place, so gradients flow through both.

    An allowed list: chosen - logsumexp(allowed). An ``Excluding``: the full-vocabulary log-prob
    (in ``logprobs``) minus log(1 - the excluded probability mass), so no [cells, vocabulary]
    tensor is made."""
    cells = [(row, pos, list(ids)) for row, positions in enumerate(allowed) for pos, ids in positions.items()
             if pos < completion_ids.shape[1]]
    if not cells:
        return logprobs
    device = completion_ids.device
    rows = torch.tensor([c[0] for c in cells], device=device)
    positions = torch.tensor([c[1] for c in cells], device=device)
    width = max(len(c[2]) for c in cells)
    ids = torch.tensor([c[2] + [c[2][0]] * (width - len(c[2])) for c in cells], device=device)
    valid = torch.tensor([[True] * len(c[2]) + [False] * (width - len(c[2])) for c in cells], device=device)
    subset = (logits_at(rows, positions, ids).float() / temperature).masked_fill(~valid, float("-inf"))
    chosen = logits_at(rows, positions, completion_ids[rows, positions][:, None]).squeeze(1).float() / temperature
    mass = torch.logsumexp(subset, dim=1)
    excluding = torch.tensor([isinstance(allowed[c[0]][c[1]], Excluding) for c in cells], device=device)
    full = logprobs[rows, positions]
    # log(1 - p_excluded), p_excluded = exp(mass - logsumexp(all)); the sampled token is not excluded, so < 1
    kept_share = torch.log1p(-torch.exp(mass - (chosen - full)).clamp(max=1 - 1e-7))
    renormalised = torch.where(excluding, full - kept_share, chosen - mass)
    return logprobs.index_put((rows, positions), renormalised)


def _full_sequence_scores(model, split, prompt_ids, completion_ids, group_size, pad_id, want_hidden):
    """Scores without a cache: each sample runs its prompt and completion in one pass."""
    ids, attention = left_pad([p.to(model_device(model)) for p in prompt_ids], pad_id)
    ids, attention = ids.repeat_interleave(group_size, dim=0), attention.repeat_interleave(group_size, dim=0)
    width = ids.shape[1]
    attention = torch.cat([attention, torch.ones_like(completion_ids, dtype=attention.dtype)], dim=1)
    inputs = dict(input_ids=torch.cat([ids, completion_ids], dim=1), attention_mask=attention,
                  position_ids=_positions(attention))
    # position t predicts token t + 1: the last prompt position predicts the first completion token
    if split is not None:
        hidden, _ = split.hidden(**inputs)
        first, after = split.head(hidden[:, width - 1]), hidden[:, width:]
    else:
        out = model(**inputs, use_cache=False, output_hidden_states=want_hidden)
        first, after = out.logits[:, width - 1], out.logits[:, width:]
        hidden = out.hidden_states[-1] if want_hidden else None
    states = hidden[:, width - 1:-1] if want_hidden else None
    return CompletionScores(first, after, split.head if split else None, states)


def check_rollouts(rollouts, prompts: int, group_size: int, engine: str) -> None:
    """What a rollout engine returned, against the contract (:class:`~reasonrl.core.contracts.Rollouts`):
    counts, shapes, a 0/1 mask, finite log-probs <= 0 on generated tokens. A broken engine fails
    here, naming itself and the field, instead of training on garbage with exit 0."""
    n = prompts * group_size

    def fail(field: str, problem: str) -> None:
        raise ReasonRLError(f"rollout engine {engine!r} broke its contract in {field}: {problem} (asked for "
                            f"{prompts} prompts x {group_size} samples = {n} completions); fix the engine")

    for field in ("prompt_ids", "completion_ids", "mask", "logprobs", "truncated", "texts", "group_size"):
        if not hasattr(rollouts, field):
            fail(field, "missing")
    if rollouts.group_size != group_size:
        fail("group_size", f"{rollouts.group_size}, not {group_size}")
    if len(rollouts.prompt_ids) != prompts:
        fail("prompt_ids", f"{len(rollouts.prompt_ids)} prompts")
    ids = rollouts.completion_ids
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] != n or ids.dtype != torch.long:
        fail("completion_ids", f"expected a [{n}, T] long tensor, got {_describe(ids)}")
    for field in ("mask", "logprobs"):
        value = getattr(rollouts, field)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(ids.shape):
            fail(field, f"expected shape {tuple(ids.shape)} like completion_ids, got {_describe(value)}")
    if not bool(((rollouts.mask == 0) | (rollouts.mask == 1)).all()):
        fail("mask", "values other than 0 and 1")
    if not isinstance(rollouts.truncated, torch.Tensor) or tuple(rollouts.truncated.shape) != (n,):
        fail("truncated", f"expected shape ({n},), got {_describe(rollouts.truncated)}")
    if len(rollouts.texts) != n:
        fail("texts", f"{len(rollouts.texts)} texts")
    generated = rollouts.logprobs[rollouts.mask.bool()]
    if not bool(torch.isfinite(generated).all()):
        fail("logprobs", "non-finite values on generated tokens")
    if generated.numel() and float(generated.max()) > 1e-3:
        fail("logprobs", f"a log-prob of {float(generated.max()):.3g} > 0 on a generated token")


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def engine_logprob_gap(trainer_logprobs: torch.Tensor, engine_logprobs: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean |trainer - engine| log-prob per generated token (nats): ~0 for an engine that samples
    from the policy it is given, a few hundredths for one with its own numerics (vLLM)."""
    keep = mask.bool()
    return float((trainer_logprobs.float() - engine_logprobs.float())[keep].abs().mean()) if keep.any() else 0.0
