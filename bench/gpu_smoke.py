"""One short check for a CUDA machine, in one call.

1. Each pack's tiny pipeline (``bench/smoke_pipelines.py``: engine, GR2, moderation) runs on the GPU:
   trainers keep float32 weights under bf16 autocast, inference runs in bf16.
2. One RL step (DAPO loss, no KL) of a SmolLM2-135M-shaped model, random init from its
   config (nothing to download), against TRL's GRPOTrainer on the benchmark's two shapes.
3. Decoding (``bench/decode_speed.py``) of the same model at 16 / 64 / 256 rows: our eager
   loop, our static cache with the captured step, ``model.generate`` plain and compiled.

    python bench/gpu_smoke.py --pack .gpu_smoke      # here: copy what the GPU machine cannot fetch
    python bench/gpu_smoke.py --assets .gpu_smoke    # there: run everything, print the tables
    python bench/gpu_smoke.py --reduced              # CPU: tiny shapes, so CI keeps the script alive

The script runs from the source tree (``PYTHONPATH`` pointing at a folder whose
``reasonrl`` is this repository) and never installs torch. TRL is optional: without it
the TRL column says so.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# assets the pipelines read, as cached by reasonrl (name-version folders)
CACHED_ASSETS = ("movielens-100k-1.2.1", "bastioncorpus-0.6.0", "embeddings")
TOKENIZER_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "chat_template.jinja")


def pack_assets(folder: Path) -> None:
    """Copy the cached datasets, item embeddings and SmolLM2's config + tokenizer into ``folder``."""
    from reasonrl.core.assets import cache_dir
    from reasonrl.plugins.engine.models import packaged_model_dir
    from smoke_pipelines import run_smoke

    with tempfile.TemporaryDirectory() as tmp:  # fills the cache (datasets, embeddings) on first use
        for name in ("gr2", "moderation"):
            run_smoke(name, Path(tmp))
    for name in CACHED_ASSETS:
        shutil.copytree(cache_dir() / name, folder / "cache" / name, dirs_exist_ok=True)
    config_dir = folder / "smollm2-config"
    config_dir.mkdir(parents=True, exist_ok=True)
    source = packaged_model_dir("smollm2-135m-instruct")
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, config_dir / name)
    print(f"packed into {folder}: {sorted(p.name for p in (folder / 'cache').iterdir())} and {config_dir.name}/")


def random_smollm2(config_dir: Path, out: Path, reduced: bool) -> str:
    """SmolLM2-135M's architecture (2 layers of it when reduced) with random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").exists():
        return str(out)
    config = AutoConfig.from_pretrained(config_dir)
    if reduced:
        config.num_hidden_layers, config.hidden_size, config.intermediate_size = 2, 64, 256
        config.num_attention_heads = config.num_key_value_heads = 4
        config.head_dim = 16
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(config_dir).save_pretrained(out)
    return str(out)


# ---------------------------------------------------------------- part 1: the packs' pipelines
def pipeline_rows(workdir: Path) -> list[str]:
    from smoke_pipelines import PIPELINES, run_smoke

    rows = []
    for name in PIPELINES:
        try:
            result = run_smoke(name, workdir / name)
            rows.append(f"| {name} | ok | {result['seconds']:.1f} | {result['peak_gpu_mib']:.0f} | "
                        f"{pipeline_detail(result)} |")
        except Exception as exc:  # one broken pack must not hide the others
            traceback.print_exc()
            rows.append(f"| {name} | **failed** | - | - | {type(exc).__name__}: {str(exc)[:160]} |")
        print(rows[-1], flush=True)
    return rows


def pipeline_detail(result: dict) -> str:
    stages = ", ".join(result["outputs"])
    report = result["report"]
    if report is None:
        return f"stages: {stages}"
    rows = report["rows"]
    shown = "; ".join(f"{variant}: parse failures {row.get('parse_failure_rate', 0):.2f}"
                      for variant, row in rows.items())
    return f"stages: {stages}; {shown}"


PIPELINE_HEADER = ("| pipeline | result | seconds | peak GPU MiB | stages and evaluation |\n"
                   "|---|---|---|---|---|")


# ---------------------------------------------------------------- part 2: RL step vs TRL
def rl_step_rows(model: str, device: str, reduced: bool) -> list[str]:
    import rl_step_vs_trl as bench

    steps, warmup = (1, 1) if reduced else (3, 1)
    rows = []
    for label, (prompts, group, prompt_len, new_tokens) in bench.SHAPES.items():
        if reduced:
            prompt_len, new_tokens = min(prompt_len, 32), min(new_tokens, 8)
        spec = {"model": model, "steps": steps, "warmup": warmup, "prompts": prompts, "group": group,
                "prompt_len": prompt_len, "new_tokens": new_tokens, "device": device}
        ours = bench.measure("reasonrl", spec)
        try:
            theirs = bench.measure("trl", spec)
        except RuntimeError as exc:
            reason = "not installed" if "No module named 'trl'" in str(exc) else str(exc).splitlines()[-1][:120]
            rows.append(f"| {label} | {ours['step_s']:.3f} | TRL: {reason} | {ours['samples_s']:.1f} | - | - | "
                        f"{ours['gpu_mb']:.0f} | - | {ours['completion_len']:.0f} / - |")
        else:
            rows.append(f"| {label} | {ours['step_s']:.3f} | {theirs['step_s']:.3f} | {ours['samples_s']:.1f} | "
                        f"{theirs['samples_s']:.1f} | **{ours['samples_s'] / theirs['samples_s']:.2f}x** | "
                        f"{ours['gpu_mb']:.0f} | {theirs['gpu_mb']:.0f} | "
                        f"{ours['completion_len']:.0f} / {theirs['completion_len']:.0f} |")
        print(rows[-1], flush=True)
    return rows


RL_HEADER = ("| shape | reasonrl s/step | TRL s/step | reasonrl samples/s | TRL samples/s | speed-up | "
             "reasonrl peak GPU MiB | TRL peak GPU MiB | answer tokens (ours / TRL) |\n"
             "|---|---|---|---|---|---|---|---|---|")


# ---------------------------------------------------------------- part 3: decoding
def decode_table(model: str, reduced: bool) -> list[str]:
    """Our eager and captured decode against generate, plain and compiled (reduced: 4 rows, no
    compilation, which on CPU costs a minute per shape and shows nothing)."""
    import decode_speed

    options = ["--rows", "4", "--static"] if reduced else ["--rows", "16,64,256", "--captured", "--compiled-peer"]
    return decode_speed.main(["--model", model, "--random-init", *options])[2:]


def machine_line(device: str) -> str:
    import torch
    import transformers

    name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or platform.machine()
    try:
        import trl

        peer = f"TRL {trl.__version__}"
    except ImportError:
        peer = "TRL not installed"
    return (f"Device: {name}; torch {torch.__version__}, transformers {transformers.__version__}, {peer}, "
            f"Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", type=Path, help="copy the assets the GPU machine cannot fetch into this folder")
    parser.add_argument("--assets", type=Path, help="a folder made by --pack (sets REASONRL_CACHE)")
    parser.add_argument("--reduced", action="store_true", help="tiny shapes; the default on a machine without CUDA")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: pipelines, rl, decode")
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    if args.pack:
        pack_assets(args.pack)
        return
    if args.assets:
        os.environ["REASONRL_CACHE"] = str(args.assets.resolve() / "cache")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    reduced = args.reduced or device == "cpu"
    skip = set(filter(None, args.skip.split(",")))
    lines = [machine_line(device) + (" (reduced mode)" if reduced else "")]
    with tempfile.TemporaryDirectory(prefix="reasonrl-gpu-smoke-") as tmp:
        if "pipelines" not in skip:
            lines += ["", "Tiny pipelines (`bench/smoke_pipelines.py`):", "", PIPELINE_HEADER, *pipeline_rows(Path(tmp))]
        config_dir = (args.assets / "smollm2-config") if args.assets else smollm2_config_here()
        model = random_smollm2(config_dir, Path(tmp) / "smollm2-random", reduced)
        what = "2-layer SmolLM2-shaped" if reduced else "SmolLM2-135M-shaped (random init)"
        if "rl" not in skip:
            lines += ["", f"One RL step, {what} model, DAPO loss, no KL, no gradient checkpointing:", "", RL_HEADER,
                      *rl_step_rows(model, device, reduced)]
        if "decode" not in skip:
            lines += ["", f"Decoding, {what} model (`bench/decode_speed.py`):", "", *decode_table(model, reduced)]
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")


def smollm2_config_here() -> Path:
    from reasonrl.plugins.engine.models import packaged_model_dir

    return packaged_model_dir("smollm2-135m-instruct")


if __name__ == "__main__":
    main()
