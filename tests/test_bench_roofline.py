import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def test_roofline_table_on_the_tiny_model(monkeypatch):
    roofline = importlib.import_module("roofline")
    monkeypatch.setattr(roofline, "SHAPE", {"prompts": 2, "group": 2, "prompt_len": 8, "new_tokens": 6})
    monkeypatch.setattr(roofline, "TRAIN", {"batch": 2, "seq_len": 16})
    monkeypatch.setattr(roofline, "REPEATS", 1)
    table = roofline.model_table("tiny", rate=1e11, bw=5e10)
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| phase")]
    phases = [row.split(" | ")[0].lstrip("| ") for row in rows]
    assert phases == ["prefill", "decode (1 step, batch 4)", "... its matrix products alone (batch 4)",
                      "scoring (old log-probs)", "forward+backward",
                      "optimizer (AdamW)", "sft step (2 x 16, loss on 8)", "lm step (2 x 16)"]
    for row in rows:
        cells = row.strip("| ").split(" | ")
        measured, compute, memory, share = float(cells[1]), float(cells[2]), float(cells[3]), cells[5]
        assert measured > 0 and compute >= 0 and memory > 0 and share.endswith("%")
        # the floor reached is the larger floor over the measured time
        assert int(share[:-1]) == pytest.approx(100 * max(compute, memory) / measured, abs=1.5)


def test_arithmetic_counts_the_output_head_once_tied_or_not():
    roofline = importlib.import_module("roofline")
    from transformers import LlamaConfig, LlamaForCausalLM

    for tied in (True, False):
        config = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tied)
        arithmetic = roofline.Arithmetic(LlamaForCausalLM(config))
        per_layer = 4 * 16 * 16 + 3 * 16 * 32  # q, k, v, o + gate, up, down
        assert arithmetic.linear == per_layer + 100 * 16  # the head, not the input embedding
        # 2 FLOPs per multiply-add per token, plus attention: 4 * layers * hidden * context per token
        assert arithmetic.forward_flops(3, 5) == 2 * arithmetic.linear * 3 + 4 * 1 * 16 * 3 * 5


def test_rows_table_cells_follow_from_the_measured_time(monkeypatch):
    roofline = importlib.import_module("roofline")
    from transformers import LlamaConfig, LlamaForCausalLM

    monkeypatch.setattr(roofline, "REPEATS", 1)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    model = LlamaForCausalLM(config)
    arithmetic = roofline.Arithmetic(model)
    table = roofline.rows_table(model, arithmetic, rate=1e11, bw=5e10, row_counts=[1, 8])
    rows = [line.strip("| ").split(" | ") for line in table.splitlines()[2:]]
    assert [int(r[0]) for r in rows] == [1, 8]
    for cells in rows:
        count, seconds = int(cells[0]), float(cells[1]) / 1e3
        rel = 0.01 + 0.0006 / float(cells[1])  # the ms cell is rounded to 3 decimals below 10 ms
        gflops = 2 * arithmetic.linear * count / seconds / 1e9
        assert float(cells[2]) == pytest.approx(gflops, rel=rel, abs=0.6)
        assert int(cells[3][:-1]) == pytest.approx(100 * gflops * 1e9 / 1e11, abs=1)
        gbytes = 4 * arithmetic.linear / seconds / 1e9
        assert float(cells[4]) == pytest.approx(gbytes, rel=rel, abs=0.06)
        assert float(cells[6]) == pytest.approx(count / seconds, rel=rel, abs=0.6)
