"""Decode speed: the ``hf`` rollout engine against transformers' ``model.generate`` (the peer).

Same model, prompts, batch, sampling (temperature 1, no top-k / top-p), and the same number of
new tokens for every row (end-of-sequence switched off), one run. CPU: float32; CUDA: bf16
weights. Prints milliseconds per decoded token step (prefill included once per call) and the
ratio, medians of 3 calls after one warm-up.

    python bench/decode_speed.py                                          # SmolLM2-135M (packaged weights)
    python bench/decode_speed.py --rows 16,32,64,128 --compiled-peer      # by batch; + compiled generate
    python bench/decode_speed.py --model .gpu_smoke/smollm2-config --random-init   # a folder with config + tokenizer
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from rl_step_vs_trl import make_prompts  # noqa: E402

GROUP = 4  # samples per prompt; rows per step = prompts x GROUP
PROMPT_TOKENS, NEW_TOKENS, REPEATS = 32, 64, 3


def load(model_arg: str, device: str, random_init: bool):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if model_arg == "smollm2":
        from reasonrl.plugins.engine.models import packaged_model_dir

        model_arg = packaged_model_dir("smollm2-135m-instruct")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_arg)
    folder = model_arg
    if random_init:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return model.to(device).eval(), tokenizer


def median_call(fn) -> float:
    fn()
    times = []
    for _ in range(REPEATS):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ours(model, tokenizer, prompts, group):
    from reasonrl.plugins.engine.rollout import HFRolloutEngine, SamplingParams

    engine = HFRolloutEngine(SamplingParams(max_new_tokens=NEW_TOKENS, temperature=1.0, prompt_batch_size=len(prompts)))

    def call():
        out = engine.generate(model, tokenizer, prompts, group, generator=None)
        assert out.completion_ids.shape[1] == NEW_TOKENS

    return call


def peer(model, tokenizer, prompts, group, **generate_options):
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)

    @torch.no_grad()
    def call():
        out = model.generate(**batch, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=NEW_TOKENS,
                             min_new_tokens=NEW_TOKENS, num_return_sequences=group, pad_token_id=tokenizer.pad_token_id,
                             **generate_options)
        assert out.shape[1] - batch["input_ids"].shape[1] == NEW_TOKENS

    return call


def rows_per_step(text: str) -> list[int]:
    rows = [int(r) for r in text.split(",") if r]
    bad = [r for r in rows if r <= 0 or r % GROUP]
    if bad:
        raise SystemExit(f"--rows {text!r}: {bad} are not positive multiples of {GROUP} (prompts x {GROUP} samples); "
                         f"use e.g. --rows 16,32,64,128")
    return rows


def compiled_peer(model, tokenizer, prompts, group):
    """``model.generate`` with a static KV cache and its forward compiled (transformers compiles on CPU only
    when asked); the warm-up call of ``median_call`` pays the compilation."""
    from transformers import CompileConfig

    config = CompileConfig()
    config._compile_all_devices = True  # transformers' switch for auto-compilation off CUDA/XPU
    return peer(model, tokenizer, prompts, group, cache_implementation="static", compile_config=config)


def header(args, device: str) -> list[str]:
    columns = ["rows", "reasonrl ms/token step", "model.generate ms/token step", "speed-up", "reasonrl tokens/s",
               "model.generate tokens/s"]
    if args.compiled_peer:
        columns.append("generate, static cache + compile, ms/token step")
    return [f"Device: {torch.cuda.get_device_name() if device == 'cuda' else 'CPU'}, torch {torch.__version__}, "
            f"model {args.model}, {PROMPT_TOKENS}-token prompts, {NEW_TOKENS} new tokens, medians of {REPEATS}.", "",
            "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="smollm2 (the packaged weights) or a model folder")
    parser.add_argument("--random-init", action="store_true", help="build the model from the folder's config only")
    parser.add_argument("--rows", default="16,64",
                        help="comma-separated rows per decode step (multiples of 4: prompts x 4 samples)")
    parser.add_argument("--compiled-peer", action="store_true",
                        help="also time model.generate with a static KV cache and torch.compile (compilation excluded)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load(args.model, device, args.random_init)
    eos = tokenizer.eos_token_id
    model.generation_config.eos_token_id = None  # every row decodes NEW_TOKENS steps on both sides
    tokenizer.eos_token_id = None
    lines = header(args, device)
    try:
        for rows in rows_per_step(args.rows):
            prompts = make_prompts(tokenizer, rows // GROUP, PROMPT_TOKENS)
            mine = median_call(ours(model, tokenizer, prompts, GROUP)) / NEW_TOKENS
            theirs = median_call(peer(model, tokenizer, prompts, GROUP)) / NEW_TOKENS
            line = (f"| {rows} | {mine * 1e3:.2f} | {theirs * 1e3:.2f} | {theirs / mine:.2f}x | "
                    f"{rows / mine:.0f} | {rows / theirs:.0f} |")
            if args.compiled_peer:
                line += f" {median_call(compiled_peer(model, tokenizer, prompts, GROUP)) / NEW_TOKENS * 1e3:.2f} |"
            lines.append(line)
            print(lines[-1], flush=True)
    finally:
        tokenizer.eos_token_id = eos
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        command = " ".join(["python bench/decode_speed.py"] + sys.argv[1:])
        args.out.write_text(f"Command: {command}\n\n{text}")


if __name__ == "__main__":
    main()
