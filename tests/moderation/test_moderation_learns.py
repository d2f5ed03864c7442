"""The moderation pack learns without collapsing: on a synthetic policy whose label follows
from a keyword it names, with two allowed texts for every violating one, label-only SFT then
RL with the pack's recipe (label_balanced, stratified draws, KL anchor, verdict_close, the
collapse guard) classifies far above the majority-label predictor and answers both labels."""

import json
from collections import Counter

import pytest

from reasonrl.core.config import resolve_config
from reasonrl.core.pipeline import run_pipeline
from reasonrl.moderation_plugins.keyword_policy import ALPHABET, write_keyword_task

@pytest.mark.slow
def test_sft_then_rl_classifies_the_keyword_policy_without_collapsing(tmp_path):
    # a class-balanced warm start (as the recipes start RL), then RL and the test on a 1:2 mix
    balanced, data = write_keyword_task(tmp_path, "balanced", 2), write_keyword_task(tmp_path, "skewed", 3)
    tiny = {"source": "tiny", "tiny": {"alphabet": ALPHABET, "hidden_size": 64, "num_layers": 2, "num_heads": 4,
                                       "intermediate_size": 128, "max_positions": 1024}}
    stages = [
        {"stage": "sft", "id": "sft", "model": tiny, "dataset": balanced, "batch_size": 16, "epochs": 4, "lr": 3e-3,
         "progress": False},
        {"stage": "rl", "id": "rl", "model": {"source": "stage", "stage": "sft"}, "dataset": data,
         "optimizer": {"name": "dapo", "params": {"beta": 0.01}},
         "rewards": ["label_balanced", "verdict_format"],
         "combiner": {"name": "weighted_sum", "params": {"weights": {"label_balanced": 1.0, "format": 0.2}}},
         "prompt_draws": "stratified", "constraint": "verdict_close",
         "metrics": [{"name": "verdict_labels", "params": {"max_label_share": 0.8, "collapse_steps": 3}}],
         "rollout": {"name": "hf", "params": {"max_new_tokens": 80, "temperature": 1.0}},
         "steps": 20, "prompts_per_step": 8, "group_size": 8, "lr": 3e-4, "progress": False},
        {"stage": "moderation_evaluate", "id": "evaluate", "dataset": data, "progress": False,
         "sampling": {"top_k": 1, "max_new_tokens": 80, "prompt_batch_size": 40}, "constraint": "verdict_close",
         "bootstrap_samples": 100,
         "variants": [{"name": "SFT", "stage": "sft", "chat_template": False},
                      {"name": "RL", "stage": "rl", "chat_template": False}]},
    ]
    config = resolve_config({"run_name": "learns", "output_dir": str(tmp_path), "seed": 0, "stages": stages})
    outputs = run_pipeline(config, echo=lambda m: None)
    rows_ = outputs["evaluate"]["rows"]
    predictions = json.loads((config.run_dir / "evaluate" / "report.json").read_text())["rows"]["RL"]["predictions"]
    shares = Counter(predictions)
    print({name: round(r["macro_f1"], 3) for name, r in rows_.items()}, shares, outputs["rl"].get("stop_reason"))
    majority_f1 = 0.4  # always 'allowed' on a 2:1 split: F1 0.8 and 0, averaged
    assert rows_["RL"]["parse_failure_rate"] == 0.0
    assert rows_["RL"]["macro_f1"] > majority_f1 + 0.35
    assert rows_["RL"]["macro_f1"] > rows_["SFT"]["macro_f1"] + 0.2  # RL does the lifting (0.37 -> 0.96 at seed 0, 2 threads)
    assert max(shares.values()) / len(predictions) <= 0.8
