"""Teacher generators: a local transformers model and any OpenAI-compatible endpoint."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from pydantic import Field

from reasonrl.core.io import atomic_write_json
from reasonrl.core.registry import Params
from reasonrl.plugins.serving.http_client import ChatClient, chat_body, reply_cache, request_key
from reasonrl.plugins.engine.models import ModelSpec
from reasonrl.plugins.engine.rollout import SamplingParams


def first_accepted(example, samples: list[str], filters) -> tuple[int | None, list[str]]:
    """Index of the first sample every rejection filter accepts, and the rejection reasons met."""
    reasons = []
    for index, sample in enumerate(samples):
        verdicts = [f.check(example, sample) for f in filters]
        failed = [v.reason for v in verdicts if not v.accepted]
        if not failed:
            return index, reasons
        reasons.append(failed[0])
    return None, reasons


@dataclass
class RejectionSampling:
    """What rejection sampling kept: the first accepted sample per example index, the samples
    drawn per example, and the rejection reasons met."""

    accepted: dict[int, str] = field(default_factory=dict)
    tries: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)


def sample_until_accepted(teacher, prompts: Sequence[str], examples: Sequence, filters, rounds: int,
                          samples_per_round: int, batch_size: int, bar) -> RejectionSampling:
    """Ask the teacher for ``samples_per_round`` samples per pending example, in batches, for up
    to ``rounds`` rounds; an example leaves the pending list at its first accepted sample."""
    out = RejectionSampling()
    pending = list(range(len(examples)))
    for _ in range(rounds):
        still = []
        for start in range(0, len(pending), batch_size):
            chunk = pending[start:start + batch_size]
            outputs = teacher.generate([prompts[i] for i in chunk], samples_per_round)
            for i, samples in zip(chunk, outputs):
                index, why = first_accepted(examples[i], samples, filters)
                out.reasons.update(why)
                out.tries[i] += len(samples) if index is None else index + 1
                if index is None:
                    still.append(i)
                else:
                    out.accepted[i] = samples[index]
            bar.update(len(chunk))
        pending = still
        if not pending:
            break
    return out


class HFTeacherParams(Params):
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(source="packaged", name="smollm2-135m-instruct"))
    """the teacher model"""
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(max_new_tokens=192, temperature=0.8,
                                                                            top_p=0.95))
    """the teacher's decoding settings"""
    chat_template: bool = True
    """wrap prompts in the tokenizer's chat template"""
    system: str | None = None
    """a system message put before every prompt"""
    seed: int = 0
    """seed of the teacher's sampling"""


class OpenAITeacherParams(Params):
    """Any OpenAI-compatible chat endpoint (vLLM's server, hosted APIs)."""

    base_url: str = Field(description="e.g. http://127.0.0.1:8000/v1")
    model: str
    """the model name the endpoint serves"""
    api_key_env: str | None = Field("OPENAI_API_KEY", description="environment variable holding the key; never logged")
    temperature: float = Field(0.8, ge=0)
    """sampling temperature sent to the endpoint"""
    max_tokens: int = Field(512, gt=0)
    """longest completion the endpoint may write"""
    system: str | None = None
    """a system message put before every prompt"""
    max_concurrency: int = Field(4, gt=0)
    """requests in flight at once"""
    retries: int = Field(4, ge=0)
    """retries of a failed or invalid request"""
    backoff_seconds: float = Field(1.0, ge=0)
    """first wait before a retry; it doubles, with jitter"""
    timeout_seconds: float = Field(120.0, gt=0)
    """seconds to wait for one reply"""
    cache_dir: str | None = Field(None, description="default: <REASONRL_CACHE>/teacher")


class HFTeacher:
    """Samples n completions per prompt from a local model (chat template applied)."""

    def __init__(self, params: HFTeacherParams) -> None:
        from reasonrl.plugins.engine.models import LazyModel

        self.params = params
        self.model = LazyModel(params.model)

    def _load(self):
        import torch

        from reasonrl.plugins.engine.rollout import HFRolloutEngine, model_device

        model, self.tokenizer = self.model.get()
        if not hasattr(self, "engine"):
            self.engine = HFRolloutEngine(self.params.sampling)
            self.generator = torch.Generator(device=model_device(model)).manual_seed(self.params.seed)
        return model

    def format(self, prompt: str) -> str:
        from reasonrl.plugins.engine.models import chat_prompt

        return chat_prompt(self.tokenizer, prompt, self.params.chat_template, self.params.system)

    def generate(self, prompts: Sequence[str], n: int = 1) -> list[list[str]]:
        model = self._load()
        rollouts = self.engine.generate(model, self.tokenizer, [self.format(p) for p in prompts], n,
                                        generator=self.generator)
        return [rollouts.texts[i * n:(i + 1) * n] for i in range(len(prompts))]


class OpenAICompatibleTeacher:
    """Chat completions over HTTP: ``n`` samples in one request, retries, concurrency, disk cache.

    The key is read from ``api_key_env`` at call time and never written anywhere; the
    cache key is the request without it, so a rerun does not pay twice. Only validated
    replies are cached.
    """

    def __init__(self, params: OpenAITeacherParams) -> None:
        self.params = params
        self.cache = reply_cache(params)
        self.client = ChatClient.from_params(params)

    def generate(self, prompts: Sequence[str], n: int = 1) -> list[list[str]]:
        with ThreadPoolExecutor(max_workers=self.params.max_concurrency) as pool:
            return list(pool.map(lambda prompt: self.complete(prompt, n), prompts))

    def complete(self, prompt: str, n: int) -> list[str]:
        """``n`` samples for one prompt: one request with ``n=``, topped up if the server sends fewer."""
        body = {**chat_body(self.params, prompt), "n": n}
        cached = self.cache / f"{request_key(self.params.base_url, body)}.json"
        if cached.exists():
            return json.loads(cached.read_text())["texts"]
        texts: list[str] = []
        while len(texts) < n:
            reply = self.client.post({**body, "n": n - len(texts)})
            texts += [choice["message"]["content"] for choice in reply["choices"]][: n - len(texts)]
        atomic_write_json(cached, {"texts": texts})
        return texts
