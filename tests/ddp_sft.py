"""Run one small ``sft`` stage; launched by test_gpu.py plainly or under torch.distributed.run."""

import json
import sys

from reasonrl.core.config import resolve_config
from reasonrl.core.pipeline import run_pipeline, shutdown_distributed

out_dir, tag, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
stage = {"stage": "sft", "id": "sft", "model": {"source": "tiny", "tiny": {"hidden_size": 32}},
         "dataset": {"name": "sort_digits", "params": {"train_size": 32}}, "batch_size": 8, "epochs": 1, "lr": 1e-2,
         "progress": False, **extra}
config = resolve_config({"run_name": tag, "output_dir": out_dir, "trackers": [], "stages": [stage]})
run_pipeline(config, echo=lambda m: None)
shutdown_distributed()
