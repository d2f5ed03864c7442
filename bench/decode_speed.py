"""Decode speed: the ``hf`` rollout engine against transformers' ``model.generate`` (the peer).

Same model, prompts, batch, sampling (temperature 1, no top-k / top-p), and the same number of
new tokens for every row (end-of-sequence switched off), one run. CPU: float32; CUDA: bf16
weights. Prints milliseconds per decoded token step (prefill included once per call) and the
ratio, medians of 3 calls after one warm-up (which pays any compilation).

    python bench/decode_speed.py                                          # SmolLM2-135M (packaged weights)
    python bench/decode_speed.py --rows 16,32,64,128 --compiled-peer      # by batch; + compiled generate
    python bench/decode_speed.py --static --captured                      # + our static cache, eager and captured
    python bench/decode_speed.py --prompt-streams                         # + one random stream per prompt
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
from bench_output import save_table  # noqa: E402
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


def ours(model, tokenizer, prompts, group, compile="off", prompt_streams=False):
    """Our engine; ``compile``: its decode mode; ``prompt_streams``: one random stream per prompt
    (``rl: sampling_seeds: prompt``) instead of one per batch."""
    from reasonrl.plugins.engine.rollout import HFRolloutEngine, SamplingParams

    engine = HFRolloutEngine(SamplingParams(max_new_tokens=NEW_TOKENS, temperature=1.0, prompt_batch_size=len(prompts),
                                            compile=compile))

    def call():
        generator = [torch.Generator(device=model.device).manual_seed(i) for i in range(len(prompts))] \
            if prompt_streams else None
        out = engine.generate(model, tokenizer, prompts, group, generator=generator)
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


def columns(args) -> list[tuple[str, object]]:
    """(column name, call maker) of every timed decoder, ours first."""
    out = [("reasonrl", lambda *a: ours(*a)), ("model.generate", peer)]
    if args.static:
        out.append(("reasonrl static cache", lambda *a: ours(*a, compile="static")))
    if args.captured:
        out.append(("reasonrl static + captured step", lambda *a: ours(*a, compile="graph")))
    if args.prompt_streams:
        out.append(("reasonrl, a stream per prompt", lambda *a: ours(*a, prompt_streams=True)))
    if args.compiled_peer:
        out.append(("generate, static cache + compile", compiled_peer))
    return out


def header(args, device: str) -> list[str]:
    names = ["rows"] + [f"{name} ms/token step" for name, _ in columns(args)] + ["speed-up vs generate"]
    if args.captured:
        names.append("captured vs our eager")
    names += [f"{name} tokens/s" for name, _ in columns(args)]
    return [f"Device: {torch.cuda.get_device_name() if device == 'cuda' else 'CPU'}, torch {torch.__version__}, "
            f"model {args.model}, {PROMPT_TOKENS}-token prompts, {NEW_TOKENS} new tokens, medians of {REPEATS}.", "",
            "| " + " | ".join(names) + " |", "|" + "---|" * len(names)]


def decode_rows(args, model, tokenizer) -> list[str]:
    """One table row per batch size: ms per token step of each decoder and the ratios."""
    lines = []
    for rows in rows_per_step(args.rows):
        prompts = make_prompts(tokenizer, rows // GROUP, PROMPT_TOKENS)
        times = {name: median_call(make(model, tokenizer, prompts, GROUP)) / NEW_TOKENS for name, make in columns(args)}
        cells = [str(rows)] + [f"{t * 1e3:.2f}" for t in times.values()]
        cells.append(f"{times['model.generate'] / times['reasonrl']:.2f}x")
        if args.captured:
            cells.append(f"{times['reasonrl'] / times['reasonrl static + captured step']:.2f}x")
        cells += [f"{rows / t:.0f}" for t in times.values()]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return lines


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="smollm2 (the packaged weights) or a model folder")
    parser.add_argument("--random-init", action="store_true", help="build the model from the folder's config only")
    parser.add_argument("--rows", default="16,64",
                        help="comma-separated rows per decode step (multiples of 4: prompts x 4 samples)")
    parser.add_argument("--compiled-peer", action="store_true",
                        help="also time model.generate with a static KV cache and torch.compile (compilation excluded)")
    parser.add_argument("--static", action="store_true", help="also time our decode on a static KV cache")
    parser.add_argument("--captured", action="store_true",
                        help="also time our static-cache decode with its step compiled (CUDA graphs on a GPU)")
    parser.add_argument("--prompt-streams", action="store_true",
                        help="also time our engine with one random stream per prompt (rl sampling_seeds: prompt)")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv=None) -> list[str]:
    args = arguments(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load(args.model, device, args.random_init)
    eos = tokenizer.eos_token_id
    model.generation_config.eos_token_id = None  # every row decodes NEW_TOKENS steps on both sides
    tokenizer.eos_token_id = None
    try:
        lines = header(args, device) + decode_rows(args, model, tokenizer)
    finally:
        tokenizer.eos_token_id = eos
    text = "\n".join(lines) + "\n"
    print(text)
    save_table(args.out, "decode_speed.py", argv, text)
    return lines


if __name__ == "__main__":
    main()
