"""Run one small ``rl`` stage; launched by test_distributed.py with 1 or 2 processes."""

import json
import sys

from reasonrl.core.config import resolve_config
from reasonrl.core.pipeline import run_pipeline, shutdown_distributed

out_dir, tag, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
stage = {"stage": "rl", "id": "rl", "model": {"source": "tiny", "tiny": {"hidden_size": 32}},
         "dataset": {"name": "sort_digits", "params": {"train_size": 200}}, "rewards": ["sort_accuracy"],
         "optimizer": {"name": "dapo", "params": {"dynamic_sampling": False}},
         "rollout": {"name": "hf", "params": {"max_new_tokens": 5, "prompt_batch_size": 4}},
         "steps": 3, "prompts_per_step": 4, "group_size": 4, "micro_batch_prompts": 1,
         "lr": 1e-2, "progress": False, **extra}
config = resolve_config({"run_name": tag, "output_dir": out_dir, "trackers": [], "stages": [stage]})
run_pipeline(config, echo=lambda m: None)
shutdown_distributed()
