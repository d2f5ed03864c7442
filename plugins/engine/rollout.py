"""Rollouts: sampling G completions per prompt and scoring their tokens.

Long prompts with short answers (reranking, moderation) dominate this project, so the
prompt is processed once per group: its KV cache is expanded over the G answers, both
when sampling and in the training forward/backward (``completion_logprobs``).
"""

from __future__ import annotations

import copy
import inspect
import weakref
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field

from reasonrl.core.contracts import Excluding, Rollouts  # noqa: F401  (Excluding: also imported from here)
from reasonrl.core.registry import Params


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
    compile: Literal["auto", "off", "static", "graph"] = Field("auto", description=(
        "off: decode on a growing KV cache, finished rows leave the batch; static: a preallocated KV cache with "
        "fixed shapes per bucket (the same tokens and log-probs); graph: static plus a decode step compiled with "
        "torch.compile(mode='reduce-overhead'), captured as a CUDA graph on GPUs; auto: graph on CUDA, off elsewhere"))


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
        self._decoders = weakref.WeakKeyDictionary()  # model -> StaticDecoder (its captured steps)

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
        pad_id = _pad_id(tokenizer)
        logits, cache, attention, _ = prefill(model, prompts, pad_id, group_size)
        if self._mode(model) != "off":
            return self._generate_static(model, tokenizer, logits, cache, attention, generator, group_size, rules)
        state = _DecodeState(self, model, tokenizer, logits.shape[0], generator, group_size, rules)
        position = attention.sum(dim=1)
        for _ in range(self.params.max_new_tokens):
            token, done = state.choose(logits)
            if state.finished_all(done):
                break
            if state.ended:
                keep = torch.nonzero(~done).flatten()
                cache.batch_select_indices(keep)
                attention, position, token = attention[keep], position[keep], token[keep]
                state.retire(keep)
            attention = F.pad(attention, (0, 1), value=1)
            out, cache = forward_with_cache(model, cache, input_ids=token[:, None], attention_mask=attention,
                                            position_ids=position[:, None])
            logits, position = out.logits[:, -1], position + 1
        return state.result()

    def _generate_static(self, model, tokenizer, logits, cache, attention, generator, group_size, rules):
        """The same decode on a static KV cache: rows stay in the batch, finished rows' tokens are dropped."""
        from reasonrl.plugins.engine.static_decode import StaticDecoder

        mode = self._mode(model)
        decoder = self._decoders.get(model)
        if decoder is None or decoder.compiled != (mode == "graph"):
            decoder = self._decoders[model] = StaticDecoder(model, compiled=mode == "graph")
        run = decoder.start(cache, attention, self.params.max_new_tokens)
        del cache  # its states now live in the static cache
        state = _DecodeState(self, model, tokenizer, logits.shape[0], generator, group_size, rules)
        feed = torch.full((logits.shape[0],), _pad_id(tokenizer), dtype=torch.long, device=logits.device)
        for _ in range(self.params.max_new_tokens):
            token, done = state.choose(logits[state.live])
            if state.finished_all(done):
                break
            feed.index_copy_(0, state.live, token)
            if state.ended:
                state.retire(torch.nonzero(~done).flatten())
            logits = run.next_logits(feed)
        return state.result()

    def _mode(self, model) -> str:
        mode = self.params.compile
        if mode == "auto":
            return "graph" if model_device(model).type == "cuda" else "off"
        return mode

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


class _DecodeState:
    """What one chunk's decode has chosen so far, row by row, and which rows are still running
    (``live``: their indices among the chunk's rows)."""

    def __init__(self, engine: HFRolloutEngine, model, tokenizer, rows: int, generator, group_size: int, rules):
        self.engine, self.tokenizer, self.rows = engine, tokenizer, rows
        self.generator, self.group_size, self.rules = generator, group_size, rules
        self.pad_id = _pad_id(tokenizer)
        self.device = model_device(model)
        self.eos = torch.tensor(stop_token_ids(model, tokenizer), dtype=torch.long, device=self.device)
        self.live, self.live_rows = torch.arange(rows, device=self.device), list(range(rows))
        self.tokens, self.masks, self.logps = [], [], []
        self.texts = [""] * rows

    def choose(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The live rows' next tokens from their ``logits``, recorded; and which of them ended."""
        params = self.engine.params
        live_rules = None if self.rules is None else [self.rules[row] for row in self.live_rows]
        scaled = logits.float() / params.temperature
        running = torch.zeros(len(self.live_rows), dtype=torch.bool, device=self.device)
        allowed = constrain(scaled.clone(), live_rules, running) if self.rules is not None else scaled
        token = self.engine._draw(allowed, self.generator, self.group_size, self.live, self.rows)
        for rule, chosen in zip(live_rules or (), token.tolist()):
            rule.advance(chosen)
        # the log-prob of the distribution the token was drawn from: under a constraint,
        # renormalised over the allowed tokens (the trainer scores the same, see replay_allowed)
        logp = allowed.log_softmax(dim=-1).gather(1, token[:, None]).squeeze(1)
        self.tokens.append(_to_all_rows(token, self.live, self.rows, self.pad_id))
        self.masks.append(_to_all_rows(torch.ones_like(token), self.live, self.rows, 0))
        self.logps.append(_to_all_rows(logp, self.live, self.rows, 0.0))
        done = torch.isin(token, self.eos)
        if params.stop_strings:
            done |= self.engine._hit_stop(self.tokenizer, self.texts, token, self.live_rows)
        return token, done

    def finished_all(self, done: torch.Tensor) -> bool:
        """Whether every live row has ended (one host synchronisation per decoded token); ``ended``
        says how many did at this token."""
        self.ended = int(done.sum())
        if self.ended == len(self.live_rows):
            self.live_rows = []
            return True
        return False

    def retire(self, keep: torch.Tensor) -> None:
        """Keep only the live rows at positions ``keep``."""
        self.live = self.live[keep]
        self.live_rows = [self.live_rows[i] for i in keep.tolist()]

    def result(self):
        truncated = torch.zeros(self.rows, dtype=torch.bool, device=self.device)
        truncated[self.live_rows] = True
        return torch.stack(self.tokens, 1), torch.stack(self.masks, 1), torch.stack(self.logps, 1), truncated


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
