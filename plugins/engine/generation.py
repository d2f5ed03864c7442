"""Batched generation with a trained model: what evaluations, inference and serving decode with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


def generate_texts(model, tokenizer, prompts: Sequence[str], sampling, samples: int = 1, seed: int = 0,
                   chat_template: bool = False, desc: str = "generate", progress: bool = True,
                   constraints: Sequence | None = None) -> list[list[str]]:
    """``samples`` completions per prompt (see :func:`generate_samples`)."""
    return generate_samples(model, tokenizer, prompts, sampling, samples, seed, chat_template, desc, progress,
                            constraints).texts


@dataclass
class Generations:
    texts: list[list[str]]
    """``samples`` completions per prompt"""
    cut: list[list[bool]]
    """True where a completion reached ``max_new_tokens`` without ending"""


def generate_samples(model, tokenizer, prompts: Sequence[str], sampling, samples: int = 1, seed: int = 0,
                     chat_template: bool = False, desc: str = "generate", progress: bool = True,
                     constraints: Sequence | None = None) -> Generations:
    """``samples`` completions per prompt, batched by ``sampling.prompt_batch_size`` with a progress
    bar, and which of them the token budget cut; ``constraints`` (one per prompt) restrict tokens as
    the rollout engine documents."""
    import torch
    from tqdm.auto import tqdm

    from reasonrl.plugins.engine.models import chat_prompt
    from reasonrl.plugins.engine.rollout import HFRolloutEngine, model_device

    model.eval()
    engine = HFRolloutEngine(sampling)
    formatted = [chat_prompt(tokenizer, p, chat_template) for p in prompts]
    size = sampling.prompt_batch_size
    generator = torch.Generator(device=model_device(model)).manual_seed(seed)
    out = Generations([], [])
    for start in tqdm(range(0, len(formatted), size), desc=desc, disable=not progress):
        rules = None if constraints is None else constraints[start:start + size]
        rollouts = engine.generate(model, tokenizer, formatted[start:start + size], samples, generator=generator,
                                   constraints=rules)
        cut = rollouts.truncated.tolist()
        for i in range(0, len(rollouts.texts), samples):
            out.texts.append(rollouts.texts[i:i + samples])
            out.cut.append(cut[i:i + samples])
    return out
