import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def test_rows_must_be_multiples_of_the_group():
    decode_speed = importlib.import_module("decode_speed")
    assert decode_speed.rows_per_step("16,32,128") == [16, 32, 128]
    with pytest.raises(SystemExit, match=r"--rows '16,6': \[6\] are not positive multiples of 4"):
        decode_speed.rows_per_step("16,6")


def test_rows_sweep_prints_one_row_per_batch_with_consistent_ratios_and_tokens_per_second(monkeypatch, tmp_path):
    decode_speed = importlib.import_module("decode_speed")
    rl_step_vs_trl = importlib.import_module("rl_step_vs_trl")
    monkeypatch.setattr(decode_speed, "NEW_TOKENS", 3)
    monkeypatch.setattr(decode_speed, "PROMPT_TOKENS", 4)
    monkeypatch.setattr(decode_speed, "REPEATS", 1)
    monkeypatch.setattr(decode_speed.torch, "compile", lambda fn, **options: fn)  # the table is tested, not inductor
    out = tmp_path / "decode.md"
    decode_speed.main(["--model", rl_step_vs_trl.model_dir("tiny"), "--rows", "4,8", "--static", "--captured", "--prompt-streams",
                       "--out", str(out)])
    lines = out.read_text().splitlines()
    names = next(line for line in lines if line.startswith("| rows")).strip("| ").split(" | ")
    rows = [dict(zip(names, line.strip("| ").split(" | "))) for line in lines if line[:3] in ("| 4", "| 8")]
    assert [int(r["rows"]) for r in rows] == [4, 8]
    decoders = ["reasonrl", "model.generate", "reasonrl static cache", "reasonrl static + captured step",
                "reasonrl, a stream per prompt"]
    assert len(names) == 1 + 2 * len(decoders) + 2
    for row in rows:
        ms = {d: float(row[f"{d} ms/token step"]) for d in decoders}
        assert float(row["speed-up vs generate"].rstrip("x")) == pytest.approx(
            ms["model.generate"] / ms["reasonrl"], rel=0.02, abs=0.01)
        assert float(row["captured vs our eager"].rstrip("x")) == pytest.approx(
            ms["reasonrl"] / ms["reasonrl static + captured step"], rel=0.02, abs=0.01)
        for d in decoders:
            assert float(row[f"{d} tokens/s"]) == pytest.approx(int(row["rows"]) / ms[d] * 1e3, rel=0.02, abs=1)
