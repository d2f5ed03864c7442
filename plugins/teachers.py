"""Teacher generators: a local transformers model and any OpenAI-compatible endpoint."""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from reasonrl.core.errors import ReasonRLError
from reasonrl.core.io import atomic_write_json
from reasonrl.plugins.params import HFTeacherParams, OpenAITeacherParams


class HFTeacher:
    """Samples n completions per prompt from a local model (chat template applied)."""

    def __init__(self, params: HFTeacherParams) -> None:
        self.params = params
        self._model = None

    def _load(self):
        if self._model is None:
            import torch

            from reasonrl.plugins.models import load_policy
            from reasonrl.plugins.rollout import HFRolloutEngine

            model, self.tokenizer = load_policy(self.params.model)
            self._model = model.eval()
            self.engine = HFRolloutEngine(self.params.sampling)
            self.generator = torch.Generator().manual_seed(self.params.seed)
        return self._model

    def format(self, prompt: str) -> str:
        from reasonrl.plugins.models import chat_prompt

        return chat_prompt(self.tokenizer, prompt, self.params.chat_template, self.params.system)

    def generate(self, prompts: Sequence[str], n: int = 1) -> list[list[str]]:
        model = self._load()
        rollouts = self.engine.generate(model, self.tokenizer, [self.format(p) for p in prompts], n,
                                        generator=self.generator)
        return [rollouts.texts[i * n:(i + 1) * n] for i in range(len(prompts))]


class OpenAICompatibleTeacher:
    """Chat completions over HTTP with retries, backoff, a concurrency limit and a disk cache.

    The key is read from ``api_key_env`` at call time and never written anywhere; the
    cache key is the request without it, so a rerun does not pay twice.
    """

    def __init__(self, params: OpenAITeacherParams) -> None:
        self.params = params
        from reasonrl.core.assets import cache_dir

        self.cache = Path(params.cache_dir) if params.cache_dir else cache_dir() / "teacher"

    def generate(self, prompts: Sequence[str], n: int = 1) -> list[list[str]]:
        jobs = [(p, i) for p in prompts for i in range(n)]
        with ThreadPoolExecutor(max_workers=self.params.max_concurrency) as pool:
            texts = list(pool.map(lambda job: self.complete(*job), jobs))
        return [texts[k * n:(k + 1) * n] for k in range(len(prompts))]

    def request_body(self, prompt: str) -> dict:
        messages = ([{"role": "system", "content": self.params.system}] if self.params.system else [])
        messages.append({"role": "user", "content": prompt})
        return {"model": self.params.model, "messages": messages, "temperature": self.params.temperature,
                "max_tokens": self.params.max_tokens}

    def complete(self, prompt: str, sample_index: int) -> str:
        body = self.request_body(prompt)
        key = hashlib.sha256(json.dumps([self.params.base_url, body, sample_index], sort_keys=True).encode()).hexdigest()
        cached = self.cache / f"{key}.json"
        if cached.exists():
            return json.loads(cached.read_text())["text"]
        text = self.post_with_retries(body)["choices"][0]["message"]["content"]
        atomic_write_json(cached, {"text": text})
        return text

    def post_with_retries(self, body: dict) -> dict:
        """The endpoint's JSON response to ``body``; transient failures are retried with backoff."""
        url = self.params.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        api_key = os.environ.get(self.params.api_key_env or "", "")
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        last_error = ""
        for attempt in range(self.params.retries + 1):
            request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.params.timeout_seconds) as response:
                    reply = json.loads(response.read())
                    reply["choices"][0]["message"]  # a reply without a message is retried like a bad one
                    return reply
            except urllib.error.HTTPError as exc:
                last_error = f"HTTP {exc.code}"
                if exc.code not in (408, 409, 425, 429) and exc.code < 500:
                    break  # a client error will not fix itself
            except (urllib.error.URLError, TimeoutError, KeyError, json.JSONDecodeError) as exc:
                last_error = type(exc).__name__ + (f": {exc.reason}" if hasattr(exc, "reason") else "")
            if attempt < self.params.retries:
                time.sleep(self.params.backoff_seconds * (2 ** attempt))
        raise ReasonRLError(f"endpoint {url} failed after {self.params.retries + 1} tries ({last_error}); "
                            f"check base_url, the model name and the key in ${self.params.api_key_env}")
