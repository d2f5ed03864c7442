"""Prompts that start alike: running their common prefix once against running every prompt whole.

The classifier's prompts share their instructions and policy (about 200 tokens of ~330 on
harmful_response); the content differs. Two measurements on SmolLM2-135M (packaged weights),
the same validation prompts as ``examples/moderation_data_efficiency.yaml``, one process:

1. greedy classification (the studies' scoring) of ``--rows`` prompts in one batch, 64 new tokens;
2. one RL training pass: log-probs of 4 prompts x 4 sampled completions, forward + backward;
3. one SFT pass: the loss of 4 examples (prompt + the label answer), forward + backward.

    python bench/shared_prefix.py                  # prints the table
    python bench/shared_prefix.py --out bench/results/shared_prefix_cpu.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from reasonrl.core.manager import get_registry
from reasonrl.moderation_plugins.prompts import sft_completion
from reasonrl.plugins.engine import rollout
from reasonrl.plugins.engine.models import ModelSpec, chat_prompt, load_policy
from reasonrl.plugins.engine.supervised import label_logprobs

DATA = {"max_chars": 400, "validation_fraction": 0.16, "warm_start_examples": 32}
REPEATS = 3


def timed(fn) -> tuple[float, object]:
    """Median seconds of REPEATS calls after one warm-up, and the last result."""
    fn()
    seconds, result = [], None
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def both_ways(fn) -> tuple[tuple[float, object], tuple[float, object]]:
    """(shared prefix, whole prompts): the same call with and without prefix sharing."""
    shared = timed(fn)
    default, rollout.MIN_SHARED_PREFIX = rollout.MIN_SHARED_PREFIX, 10**9
    try:
        whole = timed(fn)
    finally:
        rollout.MIN_SHARED_PREFIX = default
    return shared, whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=32, help="prompts classified in one batch")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    model, tokenizer = load_policy(ModelSpec(source="packaged", name="smollm2-135m-instruct"))
    model.eval()
    rows = get_registry().build("datasets", "harmful_response", DATA).splits()["validation"][: args.rows]
    prompts = [chat_prompt(tokenizer, r["prompt"], True) for r in rows]
    ids = [torch.tensor(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    shared = rollout.shared_prefix_length(ids)
    engine = rollout.HFRolloutEngine(rollout.SamplingParams(top_k=1, max_new_tokens=64, prompt_batch_size=args.rows))

    def classify():
        with torch.no_grad():
            return engine.generate(model, tokenizer, prompts, 1).texts

    sampler = rollout.HFRolloutEngine(rollout.SamplingParams(temperature=1.0, max_new_tokens=64))
    sampled = sampler.generate(model, tokenizer, prompts[:4], 4, generator=torch.Generator().manual_seed(0))

    def train_pass():
        model.zero_grad()
        logprobs, _ = rollout.completion_logprobs(model, sampled.prompt_ids, sampled.completion_ids, 4,
                                                  tokenizer.pad_token_id)
        (logprobs * sampled.mask).sum().backward()
        return logprobs.detach()

    sft_rows = [tokenizer(p + sft_completion(r["label"], r["labels"]), add_special_tokens=False)["input_ids"]
                for p, r in zip(prompts[:4], rows[:4])]
    width = max(len(r) for r in sft_rows)
    sft_ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in sft_rows])
    sft_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in sft_rows])
    first = min(len(i) for i in ids[:4]) - 1

    def sft_pass():
        model.zero_grad()
        shared_here = min(rollout.shared_prefix_length([torch.tensor(r) for r in sft_rows]), first)
        logprobs = label_logprobs(model, sft_ids, sft_mask, first, False, shared_here)
        (logprobs * sft_mask[:, first + 1:]).sum().backward()
        return logprobs.detach()

    (gen_shared, texts_shared), (gen_whole, texts_whole) = both_ways(classify)
    (sft_shared, out_shared), (sft_whole, out_whole) = both_ways(sft_pass)
    sft_gap = float(((out_shared - out_whole) * sft_mask[:, first + 1:]).abs().max())
    (train_shared, lp_shared), (train_whole, lp_whole) = both_ways(train_pass)
    same = sum(a == b for a, b in zip(texts_shared, texts_whole))
    gap = float(((lp_shared - lp_whole) * sampled.mask).abs().max())
    lengths = [len(i) for i in ids]
    lines = [f"SmolLM2-135M, CPU float32, {torch.get_num_threads()} thread(s); harmful_response validation prompts: "
             f"{min(lengths)}-{max(lengths)} tokens, {shared} shared by all; medians of {REPEATS} after a warm-up.", "",
             "| work | shared prefix s | whole prompts s | speed-up | same result |", "|---|---|---|---|---|",
             f"| greedy classification, {args.rows} prompts x 64 new tokens | {gen_shared:.2f} | {gen_whole:.2f} | "
             f"{gen_whole / gen_shared:.2f}x | {same}/{len(texts_shared)} identical answers |",
             f"| RL log-probs, 4 prompts x 4 completions, forward + backward | {train_shared:.2f} | {train_whole:.2f} | "
             f"{train_whole / train_shared:.2f}x | largest log-prob gap {gap:.1e} |",
             f"| SFT loss, 4 examples (prompt + label answer), forward + backward | {sft_shared:.2f} | "
             f"{sft_whole:.2f} | {sft_whole / sft_shared:.2f}x | largest log-prob gap {sft_gap:.1e} |"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(f"Command: python bench/shared_prefix.py --rows {args.rows}\n\n{text}\n")


if __name__ == "__main__":
    main()
