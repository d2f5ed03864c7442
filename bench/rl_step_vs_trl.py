"""RL step cost: reasonrl ``dapo`` vs TRL GRPOTrainer (loss_type="dapo", epsilon_high=0.28).

Same model, prompts, group size, batch, lengths, precision (float32 on CPU; float32 weights with
bf16 autocast on CUDA), no gradient checkpointing (TRL's default turns it on), same machine, one run. Each
measurement runs in its own subprocess so peak RSS is per configuration; step times are medians
of the measured steps (after the warm-up ones).

    python bench/rl_step_vs_trl.py                 # tiny 2-layer model (SmolLM2 vocabulary), all shapes
    python bench/rl_step_vs_trl.py --models tiny,smollm2 --out bench/results/rl_step_vs_trl.md
    python bench/rl_step_vs_trl.py --models smollm2 --chunked-logits   # vocabulary projection in chunks

Needs: pip install "trl==1.16.*" datasets (TRL is a benchmark peer, not a dependency).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {
    # name: (prompts per step, group size, prompt tokens, new tokens)
    "short prompt + long answer": (4, 4, 32, 64),
    "long prompt + short answer": (1, 8, 512, 32),
}
SWEEP_G = [4, 8, 16]
SWEEP_PROMPT = [128, 256, 512]


# ---------------------------------------------------------------- shared workload
def model_dir(kind: str) -> str:
    """Folder of the benchmark model: ``smollm2`` (135M) or ``tiny`` (2 layers, SmolLM2 vocabulary)."""
    from reasonrl.plugins.engine.models import packaged_model_dir

    smol = packaged_model_dir("smollm2-135m-instruct")
    if kind == "smollm2":
        return str(smol)
    folder = Path(tempfile.gettempdir()) / "reasonrl-bench-tiny"
    if not (folder / "config.json").exists():
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(smol)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def make_prompts(tokenizer, count: int, length: int) -> list[str]:
    words = ("the user watched a film about space then a comedy and a drama in which the hero "
             "finds a map of an old city near the sea ").split()
    prompts = []
    for i in range(count):
        text = " ".join(words[(i + j) % len(words)] for j in range(length * 2))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:length]
        prompts.append(tokenizer.decode(ids))
    return prompts


def toy_reward(completions: list[str]) -> list[float]:
    """Same cheap verifiable reward for both: share of distinct letters a-z used."""
    return [len(set(c.lower()) & set("abcdefghijklmnopqrstuvwxyz")) / 26 for c in completions]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_gpu_mb() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0


# ---------------------------------------------------------------- workers
def run_reasonrl(spec: dict) -> dict:
    import types

    from transformers import AutoTokenizer

    from reasonrl import hookimpl
    from reasonrl.core import manager
    from reasonrl.core.config import resolve_config
    from reasonrl.core.contracts import StageContext

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    prompts = make_prompts(tokenizer, spec["prompts"] * (spec["steps"] + spec["warmup"]), spec["prompt_len"])
    plugin = types.ModuleType("bench_plugin")

    class Prompts:
        def __init__(self, params):
            pass

        def splits(self):
            return {"train": [{"prompt": p} for p in prompts]}

    class Reward:
        def __init__(self, params):
            pass

        def __call__(self, prompts, completions, examples):
            return [{"letters": r} for r in toy_reward(completions)]

    @hookimpl
    def register_datasets(register):
        register("bench_prompts", Prompts)

    @hookimpl
    def register_reward_functions(register):
        register("bench_letters", Reward)

    plugin.register_datasets, plugin.register_reward_functions = register_datasets, register_reward_functions
    manager.register_plugin(plugin, "bench_plugin")
    steps = spec["steps"] + spec["warmup"]
    stage = {"stage": "rl", "id": "rl", "model": {"source": "hf", "path": spec["model"]}, "dataset": "bench_prompts",
             "rewards": ["bench_letters"], "optimizer": {"name": "dapo", "params": {"dynamic_sampling": False}},
             "rollout": {"name": "hf", "params": {"max_new_tokens": spec["new_tokens"],
                                                  "prompt_batch_size": spec["prompts"]}},
             "steps": steps, "prompts_per_step": spec["prompts"], "group_size": spec["group"],
             "micro_batch_prompts": spec["prompts"], "lr": 1e-6, "progress": False,
             "gradient_checkpointing": spec.get("gradient_checkpointing", False),
             "chunked_logits": spec.get("chunked_logits", False),
             "save_model": False}  # TRL runs with save_strategy="no"
    with tempfile.TemporaryDirectory() as tmp:
        config = resolve_config({"run_name": "bench", "output_dir": tmp, "trackers": [], "stages": [stage]})
        resolved = config.stages[0]
        component = manager.get_registry().build("stages", "rl", resolved.params)
        context = StageContext(run_dir=Path(tmp), stage_dir=Path(tmp) / "rl", stage_id="rl", seed=0,
                               registry=manager.get_registry())
        context.stage_dir.mkdir(parents=True)
        component.run(context)
        history = json.loads((context.stage_dir / "history.json").read_text())
    times = [h["step_seconds"] for h in history[spec["warmup"]:]]
    lengths = [h["completion/length"] for h in history[spec["warmup"]:]]
    return {"step_s": statistics.median(times), "completion_len": statistics.fmean(lengths), "rss_mb": peak_rss_mb(),
            "gpu_mb": peak_gpu_mb()}


def run_trl(spec: dict) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    steps = spec["steps"] + spec["warmup"]
    prompts = make_prompts(tokenizer, spec["prompts"] * steps, spec["prompt_len"])
    times, lengths = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.start)

    def reward(completions, **kw):
        lengths.extend(len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in completions)
        return toy_reward(completions)

    on_cpu = spec.get("device", "cpu") == "cpu"  # on CUDA both train float32 weights under bf16 autocast
    with tempfile.TemporaryDirectory() as tmp:
        config = GRPOConfig(
            output_dir=tmp, loss_type="dapo", epsilon_high=0.28, beta=0.0, learning_rate=1e-6, use_cpu=on_cpu,
            bf16=not on_cpu, gradient_checkpointing=spec.get("gradient_checkpointing", False),  # TRL's default is on
            per_device_train_batch_size=spec["prompts"] * spec["group"], num_generations=spec["group"],
            max_completion_length=spec["new_tokens"], max_steps=steps, logging_steps=1000, save_strategy="no",
            report_to="none", temperature=1.0, disable_dropout=True, seed=0,
        )
        model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype="float32")
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, processing_class=tokenizer,
                              train_dataset=Dataset.from_dict({"prompt": prompts}), callbacks=[Timer()])
        trainer.train()
    measured = times[spec["warmup"]:]
    return {"step_s": statistics.median(measured), "completion_len": statistics.fmean(lengths), "rss_mb": peak_rss_mb(),
            "gpu_mb": peak_gpu_mb()}


# ---------------------------------------------------------------- driver
def measure(framework: str, spec: dict) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", framework, json.dumps(spec)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{framework} {spec} failed:\n{result.stderr[-3000:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["samples_s"] = spec["prompts"] * spec["group"] / out["step_s"]
    return out


def row(label: str, spec: dict, ours: dict, theirs: dict) -> str:
    return (f"| {label} | {ours['step_s']:.2f} | {theirs['step_s']:.2f} | {ours['samples_s']:.1f} | "
            f"{theirs['samples_s']:.1f} | **{ours['samples_s'] / theirs['samples_s']:.2f}x** | "
            f"{ours['rss_mb']:.0f} | {theirs['rss_mb']:.0f} | {ours['rss_mb'] / theirs['rss_mb']:.2f} | "
            f"{ours['completion_len']:.0f} / {theirs['completion_len']:.0f} |")


HEADER = ("| workload | reasonrl median s/step | TRL median s/step | reasonrl samples/s | TRL samples/s | speed-up | "
          "reasonrl peak MB | TRL peak MB | memory ratio | answer tokens (ours / TRL) |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="tiny")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--sweeps", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--shapes", default="short,long", help="which of the two main shapes to run")
    parser.add_argument("--chunked-logits", action="store_true",
                        help="run reasonrl with the rl stage's chunked_logits option (TRL runs as always)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        framework, spec = args.worker[0], json.loads(args.worker[1])
        print(json.dumps((run_reasonrl if framework == "reasonrl" else run_trl)(spec)))
        return
    lines = []
    for kind in args.models.split(","):
        folder = model_dir(kind)
        lines += [f"\n### {kind} ({folder})\n", HEADER]
        base = {"model": folder, "steps": args.steps, "warmup": args.warmup, "chunked_logits": args.chunked_logits}
        wanted = args.shapes.split(",")
        plan = [(name, dict(base, prompts=p, group=g, prompt_len=pl, new_tokens=nt))
                for name, (p, g, pl, nt) in SHAPES.items() if name.split()[0] in wanted]
        if args.sweeps and kind == "tiny":
            plan += [(f"G={g}, 512-token prompt", dict(base, prompts=1, group=g, prompt_len=512, new_tokens=32))
                     for g in SWEEP_G if g != 8]
            plan += [(f"G=8, {pl}-token prompt", dict(base, prompts=1, group=8, prompt_len=pl, new_tokens=32))
                     for pl in SWEEP_PROMPT if pl != 512]
        for label, spec in plan:
            line = row(label, spec, measure("reasonrl", spec), measure("trl", spec))
            print(line, flush=True)
            lines.append(line)
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        command = " ".join(["python bench/rl_step_vs_trl.py"] + sys.argv[1:])
        Path(args.out).write_text(f"Command: {command}\n{table}\n")


if __name__ == "__main__":
    main()
