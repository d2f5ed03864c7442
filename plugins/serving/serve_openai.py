"""The OpenAI-shaped routes of ``reasonrl serve``: request bodies, generation and responses for
``/v1/chat/completions`` and ``/v1/completions``, and their server-sent-event streams.

A stream is sent once its batch is generated (the decoder here is not incremental): the client
gets the OpenAI chunk sequence (role, content with its log-probs, finish reason, optional usage,
``[DONE]``), so streaming clients work; the first byte comes when the answer is complete.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reasonrl.core.io import unicode_problem

MAX_N = 8


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def _clean(text: str) -> str:
    problem = unicode_problem(text)
    if problem:
        raise ValueError(problem)
    return text


# ---------------------------------------------------------------- request bodies


class StreamOptions(BaseModel):
    include_usage: bool = False


class Sampling(BaseModel):
    """What chat and text completions share."""

    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields this server does not use
    model: str
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str

    _content = field_validator("content")(_clean)


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class CompletionRequest(Sampling):
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=0, description="0 with echo: only the prompt's log-probs")
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value):
        prompts = [value] if isinstance(value, str) else value
        if not prompts:
            raise ValueError("give at least one prompt")
        for text in prompts:
            _clean(text)
        return value

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


# ---------------------------------------------------------------- shared pieces


def chat_text(tokenizer, messages: list[Message]) -> str:
    """The chat template when the tokenizer has one; else the messages' contents, one per line."""
    plain = [m.model_dump() for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
    return "\n".join(m["content"] for m in plain)


def sampling_key(kind: str, request: Sampling, max_tokens: int, cap: int) -> tuple:
    if max_tokens > cap:
        raise ApiError(400, f"max_tokens {max_tokens} is above this server's limit {cap} (--max-new-tokens)",
                       param="max_tokens")
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    return (kind, request.temperature, request.top_p, max_tokens, request.n, stop)


def chat_max_tokens(request: ChatRequest, cap: int) -> int:
    return request.max_completion_tokens or request.max_tokens or cap


def check_prompt_length(served, prompts: list[str], max_tokens: int, param: str) -> None:
    """A prompt that cannot fit the model's positions is this request's 400, not the batch's 500.
    Characters are counted first: a prompt far too long is refused without tokenizing it all."""
    limit = getattr(served.model.config, "max_position_embeddings", None)
    if limit is None:
        return
    for text in prompts:
        # no token of these vocabularies is longer than 64 characters
        length = limit + 1 if len(text) > 64 * limit else len(
            served.tokenizer(text, add_special_tokens=False)["input_ids"])
        if length + max_tokens > limit:
            shown = f"{length} tokens" if length <= limit else f"over {limit} tokens ({len(text)} characters)"
            raise ApiError(400, f"the prompt is {shown} and max_tokens {max_tokens}: together more than the "
                                f"model's {limit} positions; shorten the prompt or lower max_tokens", param=param,
                           code="context_length_exceeded")


def rollouts_for(served, key: tuple, prompts: list[str], seeds: list[int | None]):
    import torch

    from reasonrl.plugins.engine.rollout import HFRolloutEngine, SamplingParams, model_device

    _, temperature, top_p, max_tokens, n, stop = key
    greedy = temperature == 0
    engine = HFRolloutEngine(SamplingParams(temperature=1.0 if greedy else temperature, top_p=top_p,
                                            top_k=1 if greedy else 0, max_new_tokens=max_tokens,
                                            stop_strings=list(stop), prompt_batch_size=len(prompts)))
    device = model_device(served.model)
    generators = [torch.Generator(device=device).manual_seed(s if s is not None else secrets.randbits(63))
                  for s in seeds]
    return engine.generate(served.model, served.tokenizer, prompts, n, generator=generators)


def position_logprobs(served, ids):
    """Log-softmax of the model's next-token logits at every position of ``ids`` (temperature 1)."""
    import torch

    with torch.no_grad():
        return served.model(input_ids=ids[None]).logits[0].float().log_softmax(-1)


def token_entry(tokenizer, token: int, logprob: float) -> dict:
    text = tokenizer.decode([token])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8", errors="replace"))}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


# ---------------------------------------------------------------- chat


def generate_chat(served, key: tuple, requests: list[ChatRequest]) -> list[dict]:
    """One batch of chat requests that decode the same way -> their response bodies."""
    prompts = [chat_text(served.tokenizer, r.messages) for r in requests]
    rollouts = rollouts_for(served, key, prompts, [r.seed for r in requests])
    return [chat_response(served, rollouts, index, request) for index, request in enumerate(requests)]


def chat_response(served, rollouts, index: int, request: ChatRequest) -> dict:
    n = rollouts.group_size
    choices = []
    for j in range(n):
        row = index * n + j
        ids = rollouts.completion_ids[row][rollouts.mask[row].bool()]
        choice = {"index": j, "message": {"role": "assistant", "content": rollouts.texts[row]},
                  "finish_reason": "length" if bool(rollouts.truncated[row]) else "stop", "logprobs": None}
        if request.logprobs:
            choice["logprobs"] = {"content": chat_logprobs(served, rollouts.prompt_ids[index], ids,
                                                           request.top_logprobs or 0)}
        choices.append(choice)
    completion_tokens = int(rollouts.mask[index * n:(index + 1) * n].sum())
    return {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion", "created": int(time.time()),
            "model": served.name, "choices": choices, "usage": usage(len(rollouts.prompt_ids[index]), completion_tokens)}


def chat_logprobs(served, prompt_ids, completion_ids, top: int) -> list[dict]:
    """Per generated token: its log-prob and the ``top`` most likely tokens at that position,
    from the model's own distribution (temperature 1), recomputed with one forward pass."""
    import torch

    logits = position_logprobs(served, torch.cat([prompt_ids, completion_ids]))[len(prompt_ids) - 1:-1]
    out = []
    for position, token in enumerate(completion_ids.tolist()):
        values, indices = logits[position].topk(top) if top else (torch.empty(0), torch.empty(0, dtype=torch.long))
        out.append({**token_entry(served.tokenizer, token, float(logits[position, token])),
                    "top_logprobs": [token_entry(served.tokenizer, int(i), float(v))
                                     for v, i in zip(values, indices)]})
    return out


def chat_chunks(body: dict, include_usage: bool) -> Iterator[str]:
    """A chat completion as the OpenAI stream sends it: per choice a role delta, a content delta
    (with its log-probs) and a finish chunk; then the usage chunk if asked; then [DONE]."""
    head = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"], "model": body["model"]}
    for choice in body["choices"]:
        index, logprobs = choice["index"], choice["logprobs"]
        yield sse({**head, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}]})
        yield sse({**head, "choices": [{"index": index, "delta": {"content": choice["message"]["content"]},
                                        "logprobs": logprobs, "finish_reason": None}]})
        yield sse({**head, "choices": [{"index": index, "delta": {}, "logprobs": None,
                                        "finish_reason": choice["finish_reason"]}]})
    if include_usage:
        yield sse({**head, "choices": [], "usage": body["usage"]})
    yield "data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


# ---------------------------------------------------------------- text completions


def generate_completions(served, key: tuple, requests: list[CompletionRequest]) -> list[dict]:
    """One batch of text-completion requests (every prompt of each) -> their response bodies."""
    prompts = [p for r in requests for p in r.prompts()]
    seeds = [r.seed for r in requests for _ in r.prompts()]
    rollouts = rollouts_for(served, key, prompts, seeds) if key[3] > 0 else None
    out, start = [], 0
    for request in requests:
        count = len(request.prompts())
        out.append(completion_response(served, request, prompts[start:start + count], rollouts, start))
        start += count
    return out


def completion_response(served, request: CompletionRequest, prompts: list[str], rollouts, first: int) -> dict:
    import torch

    choices, prompt_tokens, completion_tokens = [], 0, 0
    for p, prompt in enumerate(prompts):
        prompt_ids = torch.tensor(served.tokenizer(prompt, add_special_tokens=False)["input_ids"], dtype=torch.long)
        prompt_tokens += len(prompt_ids)
        for j in range(request.n):
            text, ids, finish = "", torch.empty(0, dtype=torch.long), "length"
            if rollouts is not None:
                row = (first + p) * request.n + j
                ids = rollouts.completion_ids[row][rollouts.mask[row].bool()].cpu()
                text, finish = rollouts.texts[row], "length" if bool(rollouts.truncated[row]) else "stop"
            completion_tokens += len(ids)
            choice = {"index": p * request.n + j, "text": (prompt if request.echo else "") + text,
                      "finish_reason": finish, "logprobs": None}
            if request.logprobs is not None:
                choice["logprobs"] = completion_logprobs(served, prompt_ids, ids, request.logprobs, request.echo)
            choices.append(choice)
    return {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time()),
            "model": served.name, "choices": choices, "usage": usage(prompt_tokens, completion_tokens)}


def completion_logprobs(served, prompt_ids, completion_ids, top: int, echo: bool) -> dict:
    """The legacy ``logprobs`` object: tokens, their log-probs, the ``top`` alternatives and each
    token's character offset; with ``echo`` the prompt's tokens come first (the very first has
    no log-prob: nothing precedes it)."""
    import torch

    ids = torch.cat([prompt_ids, completion_ids])
    logits = position_logprobs(served, ids) if len(ids) > 1 else None
    first = 0 if echo else len(prompt_ids)
    tokens, values, tops, offsets, offset = [], [], [], [], 0
    for position in range(first, len(ids)):
        token = int(ids[position])
        piece = served.tokenizer.decode([token])
        tokens.append(piece)
        offsets.append(offset)
        offset += len(piece)
        if position == 0 or logits is None:
            values.append(None)
            tops.append(None)
            continue
        row = logits[position - 1]
        values.append(float(row[token]))
        best = row.topk(top) if top else None
        tops.append({} if best is None else {served.tokenizer.decode([int(i)]): float(v)
                                             for v, i in zip(best.values, best.indices)})
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def completion_chunks(body: dict, include_usage: bool) -> Iterator[str]:
    """A text completion as the OpenAI stream sends it: one chunk per choice, then [DONE]."""
    head = {"id": body["id"], "object": "text_completion", "created": body["created"], "model": body["model"]}
    for choice in body["choices"]:
        yield sse({**head, "choices": [choice]})
    if include_usage:
        yield sse({**head, "choices": [], "usage": body["usage"]})
    yield "data: [DONE]\n\n"
