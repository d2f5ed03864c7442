"""LLM judges: P("yes") to a rubric question, from a local model or an OpenAI-compatible endpoint.

A judge reads the probability of its answer token instead of sampling an answer: the
score is smooth (a reward with a gradient signal between 0 and 1) and deterministic.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from pydantic import Field

from reasonrl.core.io import atomic_write_json
from reasonrl.core.registry import Params
from reasonrl.plugins.engine.models import ModelSpec
from reasonrl.plugins.serving.http_client import ChatClient, InvalidReply, chat_body, reply_cache, request_key
from reasonrl.plugins.teachers import OpenAITeacherParams


class HFJudgeParams(Params):
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(source="packaged", name="smollm2-135m-instruct"))
    """the judge model"""
    chat_template: bool = True
    """wrap the judge prompt in the tokenizer's chat template"""
    batch_size: int = Field(8, gt=0)
    """judge prompts per forward pass"""


class OpenAIJudgeParams(OpenAITeacherParams):
    top_logprobs: int = Field(5, ge=1, le=20)
    """alternatives per token whose log-probs are returned (yes and no must be among them)"""
    temperature: float = 0.0
    """sampling temperature sent to the endpoint"""
    max_tokens: int = 1
    """tokens the endpoint may generate (one: the yes/no answer)"""


YES_WORDS = ("yes", "Yes", " yes", " Yes", "YES")
NO_WORDS = ("no", "No", " no", " No", "NO")


def yes_share(yes_logprobs: Sequence[float], no_logprobs: Sequence[float]) -> float:
    """P(yes) renormalised over the yes and no answer tokens; 0.5 when neither is seen."""
    yes = sum(math.exp(v) for v in yes_logprobs)
    no = sum(math.exp(v) for v in no_logprobs)
    return yes / (yes + no) if yes + no > 0 else 0.5


class HFJudge:
    """A local causal LM: softmax of the next-token logits after the chat-formatted question."""

    def __init__(self, params) -> None:
        from reasonrl.plugins.engine.models import LazyModel

        self.params = params
        self.model = LazyModel(params.model)

    def _load(self):
        model, self.tokenizer = self.model.get()
        if not hasattr(self, "yes_ids"):
            yes, no = self._answer_ids(YES_WORDS), self._answer_ids(NO_WORDS)
            self.yes_ids, self.no_ids = sorted(yes - no), sorted(no - yes)
        return model

    def _answer_ids(self, words: Sequence[str]) -> set[int]:
        """Ids of the answer words that are one token; else the first token of each bare word."""
        encoded = [self.tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
        single = {ids[0] for ids in encoded if len(ids) == 1}
        return single or {ids[0] for w, ids in zip(words, encoded) if not w.startswith(" ") and ids}

    def probability_yes(self, prompts: Sequence[str]) -> list[float]:
        import torch

        from reasonrl.plugins.engine.models import chat_prompt
        from reasonrl.plugins.engine.rollout import model_device

        model = self._load()
        texts = [chat_prompt(self.tokenizer, p, self.params.chat_template) for p in prompts]
        out = []
        self.tokenizer.padding_side = "left"  # the answer token follows the last real token
        for start in range(0, len(texts), self.params.batch_size):
            batch = self.tokenizer(texts[start:start + self.params.batch_size], return_tensors="pt", padding=True,
                                   add_special_tokens=False).to(model_device(model))
            # left padding: positions must count real tokens only, or padded rows score differently
            positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                logits = model(**batch, position_ids=positions, logits_to_keep=1).logits[:, -1].float().log_softmax(-1)
            for row in logits:
                out.append(yes_share(row[self.yes_ids].tolist(), row[self.no_ids].tolist()))
        return out


class OpenAICompatibleJudge:
    """One-token chat completion with ``logprobs``; falls back to the answer text when the
    endpoint returns no log-probabilities. Same client, key handling and disk cache as the
    ``openai_compatible`` teacher."""

    def __init__(self, params) -> None:
        self.params = params
        self.cache = reply_cache(params)
        self.client = ChatClient.from_params(params)

    def probability_yes(self, prompts: Sequence[str]) -> list[float]:
        with ThreadPoolExecutor(max_workers=self.params.max_concurrency) as pool:
            return list(pool.map(self.judge_one, prompts))

    def judge_one(self, prompt: str) -> float:
        body = chat_body(self.params, prompt)
        body.update(max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=self.params.top_logprobs)
        cached = self.cache / f"judge-{request_key(self.params.base_url, body)}.json"
        if cached.exists():
            return json.loads(cached.read_text())["p_yes"]
        p_yes = p_yes_from_reply(self.client.post(body, validate=require_answer))
        atomic_write_json(cached, {"p_yes": p_yes})
        return p_yes


def require_answer(reply: dict) -> None:
    """A judge reply needs a choice with log-probabilities or answer text (content may be null
    when only log-probabilities come back)."""

    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not choices:
        raise InvalidReply("the reply holds no choices")
    choice = choices[0]
    if not (choice.get("logprobs") or {}).get("content") and not isinstance(
            (choice.get("message") or {}).get("content"), str):
        raise InvalidReply("the reply has neither log-probabilities nor answer text")


def p_yes_from_reply(reply: dict) -> float:
    choice = reply["choices"][0]
    top = ((choice.get("logprobs") or {}).get("content") or [{}])[0].get("top_logprobs") or []
    yes = [t["logprob"] for t in top if t.get("token") in YES_WORDS]
    no = [t["logprob"] for t in top if t.get("token") in NO_WORDS]
    if yes or no:
        return yes_share(yes, no)
    answer = (choice["message"].get("content") or "").strip().lower()
    return 1.0 if answer.startswith("yes") else 0.0 if answer.startswith("no") else 0.5
