"""``reasonrl serve RUN_DIR``: an OpenAI-compatible HTTP server over a trained run (FastAPI + uvicorn).

- ``GET /health``, ``GET /v1/models``
- ``POST /v1/chat/completions``: ``n``, ``temperature`` (0 = greedy), ``top_p``, ``max_tokens``,
  ``stop``, ``seed``, ``logprobs`` / ``top_logprobs``;
- ``POST /v1/<name>`` for every registered ``serve_endpoints`` component: the moderation pack's
  ``classify`` and the GR2 pack's ``rerank`` answer as ``reasonrl classify`` / ``rerank`` do.

Requests that arrive within ``batch_wait_ms`` of each other and decode the same way are
generated as one batch, on one worker thread (the model is not shared between threads).
At most ``max_concurrency`` requests are in flight; more get 429 with ``Retry-After``.
Errors are OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from reasonrl.core.errors import ReasonRLError

MAX_N = 8


# ---------------------------------------------------------------- request bodies


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields this server does not use
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


# ---------------------------------------------------------------- the served model


@dataclass
class ServeOptions:
    max_new_tokens: int = 256
    max_batch_size: int = 8
    batch_wait_ms: float = 10.0
    max_concurrency: int = 32
    policies: tuple[str, ...] = ()  # policy files /v1/classify may read
    api_key_env: str | None = None


class ServedRun:
    """A trained run's model, with the packs' inference objects built on it when first asked."""

    def __init__(self, run_dir: Path, stage: str | None, model, tokenizer, options: ServeOptions) -> None:
        from reasonrl.plugins.manifest import choose_model

        self.run_dir, self.model, self.tokenizer, self.options = run_dir, model.eval(), tokenizer, options
        # how the packs' routes decode: as the run's evaluation measured this stage
        settings, self.why = choose_model(run_dir, stage)
        # the server's --max-new-tokens caps every answer, the packs' routes too
        self.settings = settings.model_copy(update={"max_new_tokens": min(settings.max_new_tokens,
                                                                          options.max_new_tokens)})
        self.stage = self.settings.stage
        self.name = f"{run_dir.name}/{self.stage}"
        self._shared: dict[str, Any] = {}

    @classmethod
    def load(cls, run_dir: str | Path, stage: str | None, options: ServeOptions, device: str | None = None,
             dtype: str = "auto") -> "ServedRun":
        from reasonrl.plugins.manifest import choose_model
        from reasonrl.plugins.models import load_trained

        stage = choose_model(Path(run_dir), stage)[0].stage
        return cls(Path(run_dir), stage, *load_trained(Path(run_dir), stage, device, dtype), options)

    def shared(self, key: str, factory: Callable[[], Any]) -> Any:
        """One object per server built on first use, e.g. a classifier wrapping the model."""
        if key not in self._shared:
            self._shared[key] = factory()
        return self._shared[key]


# ---------------------------------------------------------------- batching


class Batcher:
    """Collects requests for ``wait_s`` (up to ``max_batch``), groups them by key and runs each
    group's handler once, in one worker thread."""

    def __init__(self, max_batch: int, wait_s: float) -> None:
        self.max_batch, self.wait_s = max_batch, wait_s
        self.queue: asyncio.Queue | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reasonrl-generate")
        self.batches: list[int] = []  # sizes of the groups run so far (for /health and tests)

    async def submit(self, key: tuple, payload: Any, handler: Callable[[list], list]) -> Any:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((key, payload, handler, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_batch and (left := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            groups: dict[tuple, list] = defaultdict(list)
            for entry in batch:
                groups[entry[0]].append(entry)
            for entries in groups.values():
                await self._run_group(loop, entries)

    async def _run_group(self, loop, entries: list) -> None:
        handler = entries[0][2]
        self.batches.append(len(entries))
        try:
            results = await loop.run_in_executor(self.executor, handler, [e[1] for e in entries])
        except Exception as exc:  # every request of the group gets the error
            for entry in entries:
                if not entry[3].done():
                    entry[3].set_exception(exc)
            return
        for entry, result in zip(entries, results):
            if not entry[3].done():
                entry[3].set_result(result)


# ---------------------------------------------------------------- generation


def chat_text(tokenizer, messages: list[Message]) -> str:
    """The chat template when the tokenizer has one; else the messages' contents, one per line."""
    plain = [m.model_dump() for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
    return "\n".join(m["content"] for m in plain)


def sampling_key(request: ChatRequest, cap: int) -> tuple:
    max_tokens = request.max_completion_tokens or request.max_tokens or cap
    if max_tokens > cap:
        raise ApiError(400, f"max_tokens {max_tokens} is above this server's limit {cap} (--max-new-tokens)",
                       param="max_tokens")
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    return ("chat", request.temperature, request.top_p, max_tokens, request.n, stop)


def check_length(served: ServedRun, request: ChatRequest, max_tokens: int) -> None:
    """A prompt that cannot fit the model's positions is this request's 400, not the batch's 500."""
    limit = getattr(served.model.config, "max_position_embeddings", None)
    prompt = len(served.tokenizer(chat_text(served.tokenizer, request.messages), add_special_tokens=False)["input_ids"])
    if limit is not None and prompt + max_tokens > limit:
        raise ApiError(400, f"the prompt is {prompt} tokens and max_tokens {max_tokens}: together more than the "
                            f"model's {limit} positions; shorten the messages or lower max_tokens", param="messages",
                       code="context_length_exceeded")


def generate_chat(served: ServedRun, key: tuple, requests: list[ChatRequest]) -> list[dict]:
    """One batch of chat requests that decode the same way -> their response bodies."""
    import torch

    from reasonrl.plugins.rollout import HFRolloutEngine, SamplingParams, model_device

    _, temperature, top_p, max_tokens, n, stop = key
    greedy = temperature == 0
    engine = HFRolloutEngine(SamplingParams(temperature=1.0 if greedy else temperature, top_p=top_p,
                                            top_k=1 if greedy else 0, max_new_tokens=max_tokens,
                                            stop_strings=list(stop), prompt_batch_size=len(requests)))
    prompts = [chat_text(served.tokenizer, r.messages) for r in requests]
    device = model_device(served.model)
    generators = [torch.Generator(device=device).manual_seed(r.seed if r.seed is not None else secrets.randbits(63))
                  for r in requests]
    rollouts = engine.generate(served.model, served.tokenizer, prompts, n, generator=generators)
    return [chat_response(served, rollouts, index, request) for index, request in enumerate(requests)]


def chat_response(served: ServedRun, rollouts, index: int, request: ChatRequest) -> dict:
    n = rollouts.group_size
    choices = []
    for j in range(n):
        row = index * n + j
        ids = rollouts.completion_ids[row][rollouts.mask[row].bool()]
        choice = {"index": j, "message": {"role": "assistant", "content": rollouts.texts[row]},
                  "finish_reason": "length" if bool(rollouts.truncated[row]) else "stop", "logprobs": None}
        if request.logprobs:
            choice["logprobs"] = {"content": token_logprobs(served, rollouts.prompt_ids[index], ids,
                                                            request.top_logprobs or 0)}
        choices.append(choice)
    completion_tokens = int(rollouts.mask[index * n:(index + 1) * n].sum())
    prompt_tokens = len(rollouts.prompt_ids[index])
    return {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion", "created": int(time.time()),
            "model": served.name, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def token_logprobs(served: ServedRun, prompt_ids, completion_ids, top: int) -> list[dict]:
    """Per generated token: its log-prob and the ``top`` most likely tokens at that position,
    from the model's own distribution (temperature 1), recomputed with one forward pass."""
    import torch

    ids = torch.cat([prompt_ids, completion_ids])[None]
    with torch.no_grad():
        logits = served.model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float().log_softmax(-1)
    out = []
    for position, token in enumerate(completion_ids.tolist()):
        values, indices = logits[position].topk(top) if top else (torch.empty(0), torch.empty(0, dtype=torch.long))
        out.append({**_token_entry(served.tokenizer, token, float(logits[position, token])),
                    "top_logprobs": [_token_entry(served.tokenizer, int(i), float(v))
                                     for v, i in zip(values, indices)]})
    return out


def _token_entry(tokenizer, token: int, logprob: float) -> dict:
    text = tokenizer.decode([token])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


# ---------------------------------------------------------------- the app


def require_web_stack() -> None:
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ReasonRLError(f"reasonrl serve needs {' and '.join(missing)}: pip install 'reasonrl[serve]'")


def create_app(served: ServedRun):
    """The FastAPI app over ``served``; the batcher starts and stops with it."""
    from contextlib import asynccontextmanager

    require_web_stack()
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    options = served.options
    batcher = Batcher(options.max_batch_size, options.batch_wait_ms / 1000)
    state = {"in_flight": 0, "served": 0}

    @asynccontextmanager
    async def lifespan(app):
        batcher.queue = asyncio.Queue()
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        batcher.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="reasonrl serve", lifespan=lifespan)
    app.state.batcher, app.state.counters = batcher, state

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        body = {"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": exc.code}}
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        return await api_error(request, ApiError(400, f"{where or 'body'}: {first['msg']}", param=where or None))

    @app.exception_handler(ReasonRLError)
    async def bad_request(request: Request, exc: ReasonRLError):
        return await api_error(request, ApiError(400, str(exc)))

    @app.middleware("http")
    async def concurrency_limit(request: Request, call_next):
        if not request.url.path.startswith("/v1/"):
            return await call_next(request)
        if not key_matches(request, options.api_key_env):
            return await api_error(request, ApiError(401, f"missing or wrong API key: send 'Authorization: Bearer "
                                                          f"<key>' (the server reads it from ${options.api_key_env})",
                                                     code="invalid_api_key", kind="authentication_error"))
        if state["in_flight"] >= options.max_concurrency:
            return await api_error(request, ApiError(
                429, f"{state['in_flight']} requests in flight, the limit is {options.max_concurrency} "
                     f"(--max-concurrency); retry after a second", code="too_many_requests", kind="rate_limit_error"))
        state["in_flight"] += 1
        try:
            return await call_next(request)
        finally:
            state["in_flight"] -= 1
            state["served"] += 1

    add_routes(app, served, batcher, state)
    return app


def key_matches(request, env: str | None) -> bool:
    import os

    if env is None:
        return True
    expected = os.environ.get(env, "")
    given = request.headers.get("authorization", "")
    return bool(expected) and secrets.compare_digest(given.encode(), f"Bearer {expected}".encode())


def add_routes(app, served: ServedRun, batcher: Batcher, state: dict) -> None:
    options = served.options

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": served.name, "in_flight": state["in_flight"], "served": state["served"],
                "max_concurrency": options.max_concurrency, "max_batch_size": options.max_batch_size,
                "batches": len(batcher.batches), "largest_batch": max(batcher.batches, default=0)}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": 0,
                                            "owned_by": "reasonrl", "root": str(served.run_dir / served.stage)}]}

    @app.post("/v1/chat/completions")
    async def chat(request: ChatRequest):
        check_model(served, request.model)
        key = sampling_key(request, options.max_new_tokens)
        check_length(served, request, key[3])
        return await batcher.submit(key, request, lambda batch: generate_chat(served, key, batch))

    from reasonrl.core.manager import get_registry

    registry = get_registry()
    for name in registry.names("serve_endpoints"):
        add_endpoint(app, served, batcher, name, registry.build("serve_endpoints", name))


def add_endpoint(app, served: ServedRun, batcher: Batcher, name: str, endpoint) -> None:
    """``POST /v1/<name>``: validate with the endpoint's model, prepare alone, answer in batches."""

    async def route(request):
        check_model(served, getattr(request, "model", None))
        key, payload = endpoint.prepare(served, request)  # a bad request fails alone, before it joins a batch
        return await batcher.submit((name, key), payload,
                                    lambda payloads: endpoint.run_batch(served, key, payloads))

    route.__annotations__ = {"request": endpoint.request_model}  # FastAPI reads the body model from here
    app.post(f"/v1/{name}", name=name, summary=(endpoint.__doc__ or "").strip().split("\n")[0])(route)


def check_model(served: ServedRun, name: str | None) -> None:
    if name is not None and name != served.name:
        raise ApiError(404, f"model {name!r} is not served here; this server serves {served.name!r} (GET /v1/models)",
                       param="model", code="model_not_found")


# ---------------------------------------------------------------- running it


def start_in_thread(app, host: str = "127.0.0.1", port: int = 0):
    """Run ``app`` with uvicorn in a daemon thread; returns (server, base URL). ``server.should_exit = True`` stops it."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True, name="reasonrl-serve")
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise ReasonRLError(f"the server did not start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()
    return server, f"http://{bound[0]}:{bound[1]}"


class ServeCommand:
    """``reasonrl serve RUN_DIR``: the trained model behind an OpenAI-compatible API."""

    def __init__(self, params=None) -> None:
        self.params = params

    def add_arguments(self, parser) -> None:
        from reasonrl.plugins.models import add_inference_arguments

        parser.add_argument("run_dir", help="a finished run folder")
        parser.add_argument("--stage", help="which training stage's model (default: the best variant of the "
                                            "run's evaluation report, else the newest)")
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core); on a "
                            "CPU shared with a training run, give each its share (the run's config: `threads:`)")
        parser.add_argument("--max-new-tokens", type=int, default=256, help="the cap on max_tokens per request")
        parser.add_argument("--max-batch-size", type=int, default=8, help="requests generated together")
        parser.add_argument("--batch-wait-ms", type=float, default=10.0,
                            help="how long the first request waits for others to batch with")
        parser.add_argument("--max-concurrency", type=int, default=32,
                            help="requests in flight at once; more get 429 with Retry-After")
        parser.add_argument("--policy", action="append", default=[], metavar="FILE",
                            help="a policy file /v1/classify may name (by path or file stem); repeatable; "
                                 "no other server file is read")
        parser.add_argument("--api-key-env", default=None, metavar="VAR",
                            help="require 'Authorization: Bearer $VAR' on /v1/ routes")
        add_inference_arguments(parser)

    def run(self, args) -> int:
        require_web_stack()
        import uvicorn

        if args.threads is not None:
            import torch

            if args.threads < 1:
                raise ReasonRLError(f"reasonrl serve --threads {args.threads}: give at least 1 thread")
            torch.set_num_threads(args.threads)
        options = ServeOptions(args.max_new_tokens, args.max_batch_size, args.batch_wait_ms, args.max_concurrency,
                               tuple(args.policy), args.api_key_env)
        served = ServedRun.load(args.run_dir, args.stage, options, args.device, args.dtype)
        print(f"serving {served.name!r} on http://{args.host}:{args.port}/v1 "
              f"(batch <= {options.max_batch_size}, <= {options.max_concurrency} requests in flight)", flush=True)
        uvicorn.run(create_app(served), host=args.host, port=args.port, log_level="info")
        return 0
