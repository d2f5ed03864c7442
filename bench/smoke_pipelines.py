"""Tiny end-to-end pipelines of the engine and of each pack, for a quick check on any device.

``bench/gpu_smoke.py`` runs them on a GPU in bf16, and the test suite runs them on CPU (and
on CUDA where there is one). Each is seconds long on a GPU: a 2-layer model, a handful of
examples, one or two steps per stage. They check that every stage runs on the device and
writes its outputs, not that anything learns.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch

TINY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;'<>\n-_()?!/*#\"{}[]"


def _jsonl(path: str) -> dict:
    return {"name": "jsonl", "params": {"files": {"train": path, "test": path}}}


def sort_pipeline(device_options: dict) -> list[dict]:
    """The engine on its toy task: sft -> dapo (LoRA, gradient checkpointing) -> ppo."""
    tiny = {"source": "tiny", "tiny": {"hidden_size": 64, "intermediate_size": 128}}
    return [
        {"stage": "sft", "id": "sft", "model": tiny, "dataset": {"name": "sort_digits", "params": {"train_size": 16}},
         "batch_size": 8, "epochs": 1, "lr": 1e-3, **device_options},
        {"stage": "rl", "id": "dapo_lora", "model": {"source": "stage", "stage": "sft", "lora": {"r": 4, "alpha": 8}},
         "dataset": "sort_digits", "rewards": ["sort_accuracy"], "optimizer": "dapo",
         "rollout": {"name": "hf", "params": {"max_new_tokens": 6}}, "steps": 2, "prompts_per_step": 4,
         "group_size": 4, "gradient_checkpointing": True, **device_options},
        {"stage": "rl", "id": "ppo", "model": {"source": "stage", "stage": "sft"}, "dataset": "sort_digits",
         "rewards": ["sort_accuracy"], "optimizer": "ppo", "rollout": {"name": "hf", "params": {"max_new_tokens": 6}},
         "steps": 1, "prompts_per_step": 2, "group_size": 2, **device_options},
    ]


def gr2_pipeline(device_options: dict) -> list[dict]:
    """GR2 on a slice of MovieLens-100K: prepare -> midtrain -> traces -> sft -> dapo -> evaluate."""
    tiny = {"source": "tiny", "add_tokens": "prepare/sid_tokens.txt",
            "tiny": {"tokenizer_corpus": ["prepare/corpus.jsonl", "prepare/train.jsonl"], "vocab_size": 600,
                     "hidden_size": 64, "num_layers": 2, "intermediate_size": 128, "max_positions": 2048}}
    return [
        {"stage": "gr2_prepare", "id": "prepare", "history_items": 3,
         "max_users": {"train": 8, "validation": 4, "test": 6}},
        {"stage": "lm", "id": "midtrain", "model": tiny, "dataset": _jsonl("prepare/corpus.jsonl"), "seq_len": 64,
         "batch_size": 4, "steps": 2, "lr": 1e-3, **device_options},
        {"stage": "teacher_traces", "id": "traces", "dataset": _jsonl("prepare/train.jsonl"), "mode": "rejection",
         "teacher": {"name": "taste_profile", "params": {"temperature": 1.0}}, "max_rounds": 3,
         "samples_per_round": 8, "max_examples": 8},
        {"stage": "sft", "id": "sft", "model": {"source": "stage", "stage": "midtrain"},
         "dataset": _jsonl("traces/sft.jsonl"), "batch_size": 2, "epochs": 1, **device_options},
        {"stage": "rl", "id": "rl", "model": {"source": "stage", "stage": "sft"}, "dataset": _jsonl("prepare/train.jsonl"),
         "rewards": ["rank", "format"], "combiner": {"name": "conditional_rank"}, "constraint": {"name": "sid_trie"},
         "rollout": {"name": "hf", "params": {"max_new_tokens": 8}}, "steps": 1, "prompts_per_step": 2,
         "group_size": 2, **device_options},
        {"stage": "gr2_evaluate", "id": "evaluate", "dataset": _jsonl("prepare/test.jsonl"), "bootstrap_samples": 50,
         "variants": [{"name": "pre-ranker"}, {"name": "RL", "stage": "rl"}],
         "sampling": {"top_k": 1, "max_new_tokens": 8, "prompt_batch_size": 4}, "constraint": {"name": "sid_trie"}},
    ]


def moderation_pipeline(device_options: dict) -> list[dict]:
    """Moderation on prompt_injection: tfidf -> sft -> grpo (LoRA, rubric judge) -> evaluate."""
    data = {"name": "prompt_injection", "params": {"max_chars": 120, "max_train": 16}}
    tiny = {"source": "tiny", "tiny": {"max_positions": 2048, "alphabet": TINY_ALPHABET}}
    judge = {"name": "rubric_judge", "params": {"judge": {"name": "hf", "params": {"model": tiny,
                                                                                  "chat_template": False}}}}
    return [
        {"stage": "tfidf_baseline", "id": "tfidf", "dataset": data},
        {"stage": "sft", "id": "sft", "model": tiny, "dataset": data, "epochs": 1, "batch_size": 4, **device_options},
        {"stage": "rl", "id": "rl", "model": {"source": "stage", "stage": "sft", "lora": {"r": 4, "alpha": 8}},
         "dataset": data, "optimizer": "grpo", "rewards": ["label_accuracy", "verdict_format", judge],
         "rollout": {"name": "hf", "params": {"max_new_tokens": 8}}, "steps": 1, "prompts_per_step": 2,
         "group_size": 2, **device_options},
        {"stage": "moderation_evaluate", "id": "evaluate", "dataset": data, "mc_samples": 2, "max_examples": 8,
         "sampling": {"temperature": 1.0, "max_new_tokens": 6},
         "variants": [{"name": "floor", "baseline_stage": "tfidf"}, {"name": "rl", "stage": "rl", "chat_template": False}]},
    ]


PIPELINES: dict[str, Callable[[dict], list[dict]]] = {
    "engine": sort_pipeline, "gr2": gr2_pipeline, "moderation": moderation_pipeline}


def run_smoke(name: str, output_dir: Path, **device_options) -> dict:
    """Run one tiny pipeline; returns seconds, peak GPU memory and each stage's summary."""
    from reasonrl.core.config import resolve_config
    from reasonrl.core.pipeline import run_pipeline

    stages = [dict(stage, progress=False) if stage["stage"] != "tfidf_baseline" else stage
              for stage in PIPELINES[name](device_options)]
    config = resolve_config({"run_name": name, "output_dir": str(output_dir), "trackers": [], "stages": stages})
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    outputs = run_pipeline(config, echo=lambda *_: None)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    report = json.loads((config.run_dir / "evaluate" / "report.json").read_text()) if name != "engine" else None
    return {"seconds": seconds, "peak_gpu_mib": peak, "outputs": outputs, "report": report, "run_dir": config.run_dir}
