"""A stand-in for vLLM in tests: the same calls, run with transformers on CPU.

It records every call (``LLM.instances[-1].calls``), loads the model folder the way vLLM
would (a folder without config.json fails), takes pushed weights only under the plain
model's exact names and shapes, drops its weights at sleep level 2 (so an engine that
forgets to push again samples from zeros), and samples one token at a time through the
registered logits processors. Log-probs follow ``logprobs_mode``: ``raw_logprobs`` are of
the unscaled logits, ``processed_logprobs`` of the distribution actually sampled from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import torch

__version__ = "0.0-fake"


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 16
    stop: list[str] | None = None
    logprobs: int | None = None
    seed: int | None = None
    include_stop_str_in_output: bool = False
    extra_args: dict | None = None

    def __post_init__(self):
        if self.top_k == 0 or self.top_k < -1:
            raise ValueError(f"top_k must be -1 (off) or >= 1, got {self.top_k}")


@dataclass
class Logprob:
    logprob: float


@dataclass
class CompletionOutput:
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]]
    finish_reason: str
    text: str


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


class _Runner:
    def __init__(self, model):
        self.model = model
        self.loaded_names: list[list[str]] = []

    def load_weights(self, weights):
        weights = list(weights)
        expected = self.model.state_dict()
        names = [name for name, _ in weights]
        unknown = sorted(set(names) - set(expected))
        if unknown:
            raise KeyError(f"fake vLLM model has no weights named {unknown[:3]}")
        for name, tensor in weights:
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise ValueError(f"{name}: shape {tuple(tensor.shape)} != {tuple(expected[name].shape)}")
            expected[name].copy_(tensor)
        self.loaded_names.append(names)


class LLM:
    instances: list["LLM"] = []

    def __init__(self, model: str, dtype: str = "auto", logprobs_mode: str = "raw_logprobs",
                 logits_processors=(), enable_sleep_mode: bool = False, **kwargs):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.kwargs = dict(kwargs, model=model, dtype=dtype, logprobs_mode=logprobs_mode,
                           enable_sleep_mode=enable_sleep_mode)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.processors = [cls(None, torch.device("cpu"), False) for cls in logits_processors]
        self.runner = _Runner(self.model)
        self.calls: list[tuple] = []
        self.asleep = False
        LLM.instances.append(self)

    def collective_rpc(self, method):
        self.calls.append(("collective_rpc",))
        return [method(SimpleNamespace(model_runner=SimpleNamespace(model=self.runner)))]

    def sleep(self, level: int = 1):
        assert self.kwargs["enable_sleep_mode"], "sleep() needs LLM(enable_sleep_mode=True)"
        self.calls.append(("sleep", level))
        self.asleep = True
        if level == 2:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.zero_()

    def wake_up(self):
        self.calls.append(("wake_up",))
        self.asleep = False

    @torch.no_grad()
    def generate(self, prompts, sampling_params, use_tqdm=True):
        assert not self.asleep, "generate() while asleep"
        self.calls.append(("generate", len(prompts)))
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        return [self._request(prompt, p) for prompt, p in zip(prompts, params)]

    def _request(self, prompt, params):
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        out = RequestOutput(prompt_token_ids=ids)
        generator = torch.Generator().manual_seed(params.seed if params.seed is not None else 0)
        for _ in range(params.n):
            out.outputs.append(self._sample(ids, params, generator))
        return out

    def _sample(self, prompt_ids, params, generator):
        request_processors = [proc.new_req_logits_processor(params) for proc in self.processors]
        tokens, logprobs = [], []
        finish = "length"
        for _ in range(params.max_tokens):
            logits = self.model(input_ids=torch.tensor([prompt_ids + tokens])).logits[0, -1].float()
            raw = logits.log_softmax(-1)
            processed = logits / params.temperature
            for proc in request_processors:
                if proc is not None:
                    processed = proc(list(tokens), processed)
            probs = processed.softmax(-1)
            token = int(torch.multinomial(probs, 1, generator=generator))
            mode = self.kwargs["logprobs_mode"]
            logprobs.append({token: Logprob(float((processed.log_softmax(-1) if mode == "processed_logprobs"
                                                   else raw)[token]))})
            tokens.append(token)
            if token == self.tokenizer.eos_token_id:
                finish = "stop"
                break
        return CompletionOutput(tokens, logprobs, finish, self.tokenizer.decode(tokens))
