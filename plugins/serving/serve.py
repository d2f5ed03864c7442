"""``reasonrl serve RUN_DIR``: an OpenAI-compatible HTTP server over a trained run (FastAPI + uvicorn).

- ``GET /health``, ``GET /v1/models``
- ``POST /v1/chat/completions``: ``n``, ``temperature`` (0 = greedy), ``top_p``, ``max_tokens``,
  ``stop``, ``seed``, ``logprobs`` / ``top_logprobs``, ``stream``;
- ``POST /v1/completions``: the same on a raw prompt, plus ``echo`` and integer ``logprobs``, so
  evaluation harnesses can read a prompt's log-likelihood (``echo``, ``max_tokens: 0``);
- ``POST /v1/<name>`` for every registered ``serve_endpoints`` component: the moderation pack's
  ``classify`` and the GR2 pack's ``rerank`` answer as ``reasonrl classify`` / ``rerank`` do.

Requests that arrive within ``batch_wait_ms`` of each other and decode the same way are
generated as one batch, on one worker thread (the model is not shared between threads).
At most ``max_concurrency`` requests are in flight; more get 429 with ``Retry-After``. Bodies
over ``max_body_bytes`` get 413 before they are read, and prompts are measured before they are
tokenized, so one huge request neither blocks ``/health`` nor stays in memory.
Errors are OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}``, unknown routes
and wrong methods too.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from reasonrl.core.errors import ReasonRLError
from reasonrl.core.manager import get_registry
from reasonrl.plugins.engine.manifest import choose_model
from reasonrl.plugins.serving.guards import add_error_handlers, add_limits
from reasonrl.plugins.serving.serve_openai import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    chat_chunks,
    chat_max_tokens,
    chat_text,
    check_prompt_length,
    completion_chunks,
    generate_chat,
    generate_completions,
    sampling_key,
)

# ---------------------------------------------------------------- the served model


@dataclass
class ServeOptions:
    max_new_tokens: int = 256
    max_batch_size: int = 8
    batch_wait_ms: float = 10.0
    max_concurrency: int = 32
    policies: tuple[str, ...] = ()  # policy files /v1/classify may read
    api_key_env: str | None = None
    max_body_bytes: int = 1_000_000  # larger bodies get 413 before they are read


class ServedRun:
    """A trained run's model, with the packs' inference objects built on it when first asked."""

    def __init__(self, run_dir: Path, stage: str | None, model, tokenizer, options: ServeOptions) -> None:
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
        from reasonrl.plugins.engine.models import load_trained

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
    from fastapi import FastAPI

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

    add_error_handlers(app)
    add_limits(app, options, state)
    add_routes(app, served, batcher, state)
    return app


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
        key = sampling_key("chat", request, chat_max_tokens(request, options.max_new_tokens), options.max_new_tokens)
        prompt = chat_text(served.tokenizer, request.messages)
        await asyncio.to_thread(check_prompt_length, served, [prompt], key[3], "messages")
        body = await batcher.submit(key, request, lambda batch: generate_chat(served, key, batch))
        return streamed(chat_chunks(body, include_usage(request))) if request.stream else body

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest):
        check_model(served, request.model)
        key = sampling_key("text", request, request.max_tokens, options.max_new_tokens)
        await asyncio.to_thread(check_prompt_length, served, request.prompts(), key[3], "prompt")
        body = await batcher.submit(key, request, lambda batch: generate_completions(served, key, batch))
        return streamed(completion_chunks(body, include_usage(request))) if request.stream else body

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


def include_usage(request) -> bool:
    return bool(request.stream_options and request.stream_options.include_usage)


def streamed(chunks):
    from fastapi.responses import StreamingResponse

    return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


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
        from reasonrl.plugins.engine.models import add_inference_arguments

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
        parser.add_argument("--max-body-bytes", type=int, default=1_000_000,
                            help="larger request bodies get 413 before they are read")
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
                               tuple(args.policy), args.api_key_env, args.max_body_bytes)
        served = ServedRun.load(args.run_dir, args.stage, options, args.device, args.dtype)
        print(f"serving {served.name!r} on http://{args.host}:{args.port}/v1 "
              f"(batch <= {options.max_batch_size}, <= {options.max_concurrency} requests in flight)", flush=True)
        uvicorn.run(create_app(served), host=args.host, port=args.port, log_level="info")
        return 0
