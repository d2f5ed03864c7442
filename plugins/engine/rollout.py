"""Rollouts: sampling G completions per prompt and scoring their tokens.

Long prompts with short answers (reranking, moderation) dominate this project, so the
prompt is processed once per group: its KV cache is expanded over the G answers, both
when sampling and in the training forward/backward (``completion_logprobs``).
"""

from __future__ import annotations

import copy
import inspect
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field

from reasonrl.core.contracts import Rollouts
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.registry import Params
from reasonrl.plugins.engine.logits import chosen_logits, chosen_logprobs, split_policy


class SamplingParams(Params):
    temperature: float = Field(1.0, gt=0)
    """sampling temperature (the trainer scores log-probs at the same temperature)"""
    top_p: float = Field(1.0, gt=0, le=1)
    """nucleus sampling: keep the smallest set of tokens with this total probability"""
    top_k: int = Field(0, ge=0, description="0 = no top-k cut")
    max_new_tokens: int = Field(64, gt=0)
    """longest completion, in tokens"""
    stop_strings: list[str] = Field(default_factory=list)
    """generation stops after any of these strings"""
    prompt_batch_size: int = Field(8, gt=0, description="prompts prefilled together")


MIN_SHARED_PREFIX = 16  # prompts sharing fewer leading tokens are run whole


def model_device(model) -> torch.device:
    """Where the model's weights are: every tensor it consumes is created there."""
    return next(model.parameters()).device


def left_pad(sequences: Sequence[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    device = sequences[0].device
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long, device=device)
    attention = torch.zeros((len(sequences), width), dtype=torch.long, device=device)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = seq
        attention[row, width - len(seq):] = 1
    return ids, attention


def _positions(attention: torch.Tensor) -> torch.Tensor:
    return (attention.cumsum(dim=1) - 1).clamp(min=0)


def _inner(model):
    """The model inside a data-parallel wrapper (DDP keeps it as ``.module``)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _accepts(model, argument: str) -> bool:
    """Whether the underlying transformers model's forward takes ``argument``."""
    base = _inner(model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    return argument in inspect.signature(base.forward).parameters


def _cache_key(model) -> str:
    """transformers 5.x renamed ``past_key_values`` to ``cache``; support both."""
    return "cache" if _accepts(model, "cache") else "past_key_values"


def forward_with_cache(model, cache, **inputs):
    """One forward pass that reads and extends ``cache``; returns (output, cache)."""
    key = _cache_key(model)
    out = model(**inputs, **{key: cache}, use_cache=True)
    return out, getattr(out, key)


def shared_prefix_length(prompts: Sequence[torch.Tensor]) -> int:
    """Tokens every prompt starts with (each keeps at least one of its own), 0 when too few to pay."""
    if len(prompts) < 2:
        return 0
    shortest = min(len(p) for p in prompts)
    first = prompts[0][:shortest]
    same = torch.stack([p[:shortest] == first for p in prompts[1:]]).all(dim=0)
    length = min(int(same.int().cumprod(0).sum()), shortest - 1)
    return length if length >= MIN_SHARED_PREFIX else 0


def shared_prefix_cache(model, prefix: torch.Tensor, rows: int):
    """The KV cache of one row's ``prefix`` [1, L], expanded to ``rows`` rows inside the graph
    (the backward pass runs the prefix once too)."""
    from transformers import DynamicCache

    _, cache = forward_with_cache(model, DynamicCache(config=_inner(model).config), input_ids=prefix)
    cache.batch_repeat_interleave(rows)
    return cache


def prefill(model, prompts: Sequence[torch.Tensor], pad_id: int, group_size: int, want_hidden: bool = False,
            last_only: bool = False):
    """Run the prompts once; return last logits, cache and attention expanded G times,
    and the last prompt hidden state (per prompt) when ``want_hidden``.

    Prompts that start alike (a classifier's instructions and policy before each content) run
    their common prefix once, on one row; each row then holds [prefix, padding, own tokens]."""
    from transformers import DynamicCache

    prompts = [p.to(model_device(model)) for p in prompts]
    shared = shared_prefix_length(prompts)
    cache = shared_prefix_cache(model, prompts[0][None, :shared], len(prompts)) if shared else \
        DynamicCache(config=_inner(model).config)
    ids, attention = left_pad([p[shared:] for p in prompts], pad_id)
    attention = torch.cat([attention.new_ones(len(prompts), shared), attention], dim=1)
    # last_only: no [rows, prompt, V] logits (its rounding can differ from the full projection's)
    keep = {"logits_to_keep": 1} if last_only and _accepts(model, "logits_to_keep") else {}
    out, cache = forward_with_cache(model, cache, input_ids=ids, attention_mask=attention,
                                    position_ids=_positions(attention)[:, shared:], output_hidden_states=want_hidden,
                                    **keep)
    cache.batch_repeat_interleave(group_size)
    last_hidden = out.hidden_states[-1][:, -1] if want_hidden else None
    return (out.logits[:, -1].repeat_interleave(group_size, dim=0), cache,
            attention.repeat_interleave(group_size, dim=0), last_hidden)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) > top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_tokens(probs: torch.Tensor, generator=None, group_size: int = 1, live: torch.Tensor | None = None,
                  rows: int | None = None) -> torch.Tensor:
    """One token per row drawn from ``probs``: argmax(p / E) with E ~ Exp(1) picks token i with
    probability p_i, and costs a fraction of torch.multinomial on large vocabularies.

    ``generator`` may be a list with one generator per prompt (its ``group_size`` rows in a row).
    When ``probs`` holds only the ``live`` rows of a batch of ``rows``, noise is still drawn for
    all of them, so a row's draws do not depend on which other rows are still running."""
    rows = rows or probs.shape[0]
    shape = (group_size if isinstance(generator, (list, tuple)) else rows, probs.shape[-1])
    if isinstance(generator, (list, tuple)):
        uniform = torch.cat([torch.rand(shape, generator=g, device=probs.device) for g in generator])
    else:
        uniform = torch.rand(shape, generator=generator, device=probs.device)
    noise = uniform.clamp_(min=1e-30).log_().neg_()  # -log U ~ Exp(1); cheaper than exponential_ on CPU
    if live is not None and len(live) < rows:
        noise = noise[live]
    return (probs / noise).argmax(dim=-1)


def _to_all_rows(values: torch.Tensor, live: torch.Tensor, rows: int, fill) -> torch.Tensor:
    """``values`` of the live rows spread over all ``rows`` (``fill`` for finished ones)."""
    if len(values) == rows:
        return values
    return torch.full((rows,), fill, dtype=values.dtype, device=values.device).index_copy_(0, live, values)


class Excluding(tuple):
    """What a constraint's ``allowed()`` returns to forbid a few token ids and allow the rest
    (a plain list of ids allows those only)."""


def mask_logits(logits: torch.Tensor, allowed) -> torch.Tensor:
    """``logits`` (one row) with -inf outside ``allowed`` ids, or on the ids of an ``Excluding``."""
    if not allowed:
        return logits
    if isinstance(allowed, Excluding):
        return logits.index_fill(-1, torch.tensor(allowed, device=logits.device), float("-inf"))
    keep = torch.full_like(logits, float("-inf"))
    keep[list(allowed)] = 0.0
    return logits + keep


def constrain(logits: torch.Tensor, rules: Sequence, finished: torch.Tensor) -> torch.Tensor:
    """Each unfinished row masked by its rule's ``allowed()`` (rows whose rule allows anything stay)."""
    for row in torch.nonzero(~finished).flatten().tolist():
        if rules[row] is not None:
            logits[row] = mask_logits(logits[row], rules[row].allowed())
    return logits


class HFRolloutEngine:
    """transformers models, KV cache, one prefill per prompt shared by its G samples."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params

    @property
    def temperature(self) -> float:
        return self.params.temperature

    @torch.no_grad()
    def generate(self, model, tokenizer, prompts: Sequence[str], group_size: int, generator=None,
                 constraints: Sequence | None = None) -> Rollouts:
        """``generator``: one, or a list with one per prompt. ``constraints``: one per prompt (or None),
        each with ``allowed() -> token ids or None`` and ``advance(token_id)``; every sample of the
        prompt gets its own copy (after ``tell_budget``)."""
        tell_budget(constraints, self.params.max_new_tokens)
        device = model_device(model)
        prompt_ids = [torch.tensor(tokenizer(p, add_special_tokens=False)["input_ids"], dtype=torch.long, device=device)
                      for p in prompts]
        chunks = []
        step = self.params.prompt_batch_size
        for start in range(0, len(prompt_ids), step):
            rules = None if constraints is None else \
                [copy.deepcopy(c) for c in constraints[start:start + step] for _ in range(group_size)]
            chunk_generator = generator[start:start + step] if isinstance(generator, (list, tuple)) else generator
            chunks.append(self._generate_chunk(model, tokenizer, prompt_ids[start:start + step], group_size,
                                               chunk_generator, rules))
        width = max(c[0].shape[1] for c in chunks)
        completion = torch.cat([F.pad(c[0], (0, width - c[0].shape[1]), value=_pad_id(tokenizer)) for c in chunks])
        mask = torch.cat([F.pad(c[1], (0, width - c[1].shape[1])) for c in chunks])
        logprobs = torch.cat([F.pad(c[2], (0, width - c[2].shape[1])) for c in chunks])
        truncated = torch.cat([c[3] for c in chunks])
        eos_ids = set(stop_token_ids(model, tokenizer))
        texts = [self._text(tokenizer, ids, m, eos_ids) for ids, m in zip(completion, mask)]
        return Rollouts(prompt_ids, completion, mask, logprobs, truncated, texts, group_size)

    def _generate_chunk(self, model, tokenizer, prompts, group_size, generator, rules=None):
        """Decode one chunk of prompts. A row that has finished leaves the batch (its KV cache
        rows are dropped), so the long answers of a few samples do not make every row pay; until
        one finishes, a step does no more work than decoding without retirement."""
        params = self.params
        pad_id, eos_ids = _pad_id(tokenizer), stop_token_ids(model, tokenizer)
        logits, cache, attention, _ = prefill(model, prompts, pad_id, group_size)
        rows, device = logits.shape[0], logits.device
        eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
        live, live_rows = torch.arange(rows, device=device), list(range(rows))  # the rows still decoding
        position = attention.sum(dim=1)
        tokens, masks, logps = [], [], []
        texts = [""] * rows
        for _ in range(params.max_new_tokens):
            live_rules = None if rules is None else [rules[row] for row in live_rows]
            scaled = logits.float() / params.temperature
            running = torch.zeros(len(live_rows), dtype=torch.bool, device=device)  # no finished rows in the batch
            allowed = constrain(scaled.clone(), live_rules, running) if rules is not None else scaled
            token = self._draw(allowed, generator, group_size, live, rows)
            for rule, chosen in zip(live_rules or (), token.tolist()):
                rule.advance(chosen)
            # the log-prob of the distribution the token was drawn from: under a constraint,
            # renormalised over the allowed tokens (the trainer scores the same, see replay_allowed)
            logp = allowed.log_softmax(dim=-1).gather(1, token[:, None]).squeeze(1)
            tokens.append(_to_all_rows(token, live, rows, pad_id))
            masks.append(_to_all_rows(torch.ones_like(token), live, rows, 0))
            logps.append(_to_all_rows(logp, live, rows, 0.0))
            done = torch.isin(token, eos)
            if params.stop_strings:
                done |= self._hit_stop(tokenizer, texts, token, live_rows)
            finished = int(done.sum())  # one host synchronisation per decoded token, as before
            if finished == len(live_rows):
                live_rows = []
                break
            if finished:
                keep = torch.nonzero(~done).flatten()
                cache.batch_select_indices(keep)
                live, attention, position, token = live[keep], attention[keep], position[keep], token[keep]
                live_rows = [live_rows[i] for i in keep.tolist()]
            attention = F.pad(attention, (0, 1), value=1)
            out, cache = forward_with_cache(model, cache, input_ids=token[:, None], attention_mask=attention,
                                            position_ids=position[:, None])
            logits, position = out.logits[:, -1], position + 1
        truncated = torch.zeros(rows, dtype=torch.bool, device=device)
        truncated[live_rows] = True
        return torch.stack(tokens, 1), torch.stack(masks, 1), torch.stack(logps, 1), truncated

    def _draw(self, logits, generator, group_size, live, rows) -> torch.Tensor:
        """The next token of each live row. Noise is drawn for every row of the chunk, finished or
        not, so a sample's draws do not depend on when the other rows finished."""
        params = self.params
        if params.top_k == 1:
            return logits.argmax(dim=-1)  # greedy: no softmax or noise over the vocabulary
        probs = filter_logits(logits, params.top_k, params.top_p).softmax(dim=-1)
        return sample_tokens(probs, generator, group_size, live, rows)

    def _hit_stop(self, tokenizer, texts, token, live_rows) -> torch.Tensor:
        hit = torch.zeros(len(live_rows), dtype=torch.bool, device=token.device)
        for index, row in enumerate(live_rows):
            texts[row] += tokenizer.decode([int(token[index])])
            hit[index] = any(s in texts[row] for s in self.params.stop_strings)
        return hit

    def _text(self, tokenizer, ids, mask, eos_ids=()) -> str:
        kept = [int(t) for t, m in zip(ids.tolist(), mask.tolist()) if m and int(t) not in eos_ids]
        text = tokenizer.decode(kept, skip_special_tokens=False)
        for stop in self.params.stop_strings:
            if stop in text:
                text = text[: text.index(stop) + len(stop)]
        return text


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every end-of-sequence id: the tokenizer's and those the model's ``generation_config`` lists
    (Llama-3 and Qwen chat models end turns with an id other than the tokenizer's eos)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids |= set(configured if isinstance(configured, (list, tuple)) else [configured])
    return sorted(ids)


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


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


def tell_budget(constraints: Sequence | None, max_new_tokens: int) -> None:
    """Give each constraint with ``set_budget`` the token budget, so it can keep room to finish an
    answer. The caller's objects are told (not copies): a replay of the same rule sees the same budget."""
    for rule in constraints or ():
        if rule is not None and hasattr(rule, "set_budget"):
            rule.set_budget(max_new_tokens)


def replay_allowed(constraint, tokens: Sequence[int]) -> dict[int, list[int]]:
    """Feed a fresh copy of ``constraint`` the sampled tokens; {position: allowed ids} where it
    restricted the vocabulary. Constraints are deterministic, so this is what the engine used."""
    state, allowed = copy.deepcopy(constraint), {}
    for position, token in enumerate(tokens):
        ids = state.allowed()
        if ids:
            allowed[position] = ids if isinstance(ids, Excluding) else list(ids)
        state.advance(int(token))
    return allowed


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


# ---------------------------------------------------------------- the engine contract, checked


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
