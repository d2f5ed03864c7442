"""Run one small ``lm`` stage; launched by test_distributed.py with 1 or 2 processes."""

import json
import sys

from reasonrl.core.config import resolve_config
from reasonrl.core.pipeline import run_pipeline, shutdown_distributed

out_dir, tag, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
stage = {"stage": "lm", "id": "lm", "model": {"source": "tiny", "tiny": {"hidden_size": 32}},
         "dataset": {"name": "sort_digits", "params": {"train_size": 400}}, "text_field": "prompt",
         "seq_len": 16, "batch_size": 8, "steps": 5, "lr": 1e-2, "progress": False, **extra}
config = resolve_config({"run_name": tag, "output_dir": out_dir, "trackers": [], "stages": [stage]})
run_pipeline(config, echo=lambda m: None)
shutdown_distributed()
