"""The GR2 stages connect end to end on a small slice of MovieLens-100K with a tiny student."""

import json

import pytest

from reasonrl.core.config import resolve_config
from reasonrl.core.pipeline import run_pipeline

TINY = {"source": "tiny", "add_tokens": "prepare/sid_tokens.txt",
        "tiny": {"tokenizer_corpus": ["prepare/corpus.jsonl", "prepare/train.jsonl"], "vocab_size": 600, "hidden_size": 64, "num_layers": 2, "intermediate_size": 128,
                 "max_positions": 2048}}


def jsonl(path):
    return {"name": "jsonl", "params": {"files": {"train": path, "test": path}}}


@pytest.mark.slow
def test_prepare_midtrain_traces_sft_rl_evaluate(tmp_path):
    stages = [
        {"stage": "gr2_prepare", "id": "prepare", "history_items": 3, "max_users": {"train": 8, "validation": 4, "test": 6},
         "progress": False},
        {"stage": "lm", "id": "midtrain", "model": TINY, "dataset": jsonl("prepare/corpus.jsonl"), "seq_len": 64,
         "batch_size": 4, "steps": 2, "lr": 1e-3, "progress": False},
        # the rule-based teacher under the paper's rejection filters (valid format, top-1 = held-out item)
        {"stage": "teacher_traces", "id": "traces", "dataset": jsonl("prepare/train.jsonl"), "mode": "rejection",
         "teacher": {"name": "taste_profile", "params": {"temperature": 1.0}}, "max_rounds": 3,
         "samples_per_round": 8, "max_examples": 8, "progress": False},
        {"stage": "sft", "id": "sft", "model": {"source": "stage", "stage": "midtrain"},
         "dataset": jsonl("traces/sft.jsonl"), "batch_size": 2, "epochs": 1, "progress": False},
        {"stage": "rl", "id": "rl", "model": {"source": "stage", "stage": "sft"}, "dataset": jsonl("prepare/train.jsonl"),
         "rewards": ["rank", "format"], "combiner": {"name": "conditional_rank"},
         "rollout": {"name": "hf", "params": {"max_new_tokens": 8}}, "steps": 1, "prompts_per_step": 2,
         "group_size": 2, "progress": False},
        {"stage": "gr2_evaluate", "id": "evaluate", "dataset": jsonl("prepare/test.jsonl"), "bootstrap_samples": 50,
         "variants": [{"name": "pre-ranker"}, {"name": "RL"  , "stage": "rl"}], "comparisons": [["pre-ranker", "RL"]],
         "sampling": {"top_k": 1, "max_new_tokens": 8}, "trace_stages": ["traces"], "progress": False},
    ]
    config = resolve_config({"run_name": "gr2", "output_dir": str(tmp_path), "stages": stages})
    outputs = run_pipeline(config, echo=lambda m: None)
    prepare = outputs["prepare"]
    assert prepare["sid_uniqueness"] == 1.0 and prepare["examples/test"] == 6
    traces = outputs["traces"]
    assert traces["accepted"] >= 1 and set(traces["rejections"]) <= {"top1_mismatch"}
    assert traces["tries_per_accepted"] >= 1 and traces["samples_drawn"] >= traces["accepted"]
    sft_rows = [json.loads(line) for line in (tmp_path / "gr2" / "traces" / "sft.jsonl").read_text().splitlines()]
    assert all(r["segments"][0][1] == 0.5 and r["segments"][1][1] == 1.0 for r in sft_rows)  # lambda_r < lambda_o
    report = json.loads((tmp_path / "gr2" / "evaluate" / "report.json").read_text())
    pre = report["rows"]["pre-ranker"]
    test = [json.loads(line) for line in (tmp_path / "gr2" / "prepare" / "test.jsonl").read_text().splitlines()]
    expected_r1 = sum(e["target_index"] == 0 for e in test) / len(test)
    assert pre["recall@1"] == pytest.approx(expected_r1) and pre["recall@10"] == 1.0
    assert pre["identity_copy_rate"] == 1.0 and pre["parse_failure_rate"] == 0.0
    assert 0.0 <= report["rows"]["RL"]["parse_failure_rate"] <= 1.0
    assert (tmp_path / "gr2" / "evaluate" / "report.png").stat().st_size > 1000
    assert "| pre-ranker |" in outputs["evaluate"]["report_markdown"]
    assert "`traces` (rejection)" in outputs["evaluate"]["report_markdown"]
    # the paired difference is the mean of the per-list differences (8 new tokens never finish an answer: RL scores 0)
    rl_lists, pre_lists = report["rows"]["RL"]["ndcg@5_per_list"], pre["ndcg@5_per_list"]
    [paired] = report["comparisons"]
    assert paired["difference"] == pytest.approx(sum(rl_lists) / len(rl_lists) - sum(pre_lists) / len(pre_lists))
    assert paired["lists"] == len(test) and "| RL - pre-ranker |" in outputs["evaluate"]["report_markdown"]
    assert "ndcg@5_per_list" not in outputs["evaluate"]["rows"]["RL"]  # kept out of the stage summary
