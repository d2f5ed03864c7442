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


def test_rows_sweep_prints_one_row_per_batch_with_consistent_tokens_per_second(monkeypatch, tmp_path, capsys):
    decode_speed = importlib.import_module("decode_speed")
    rl_step_vs_trl = importlib.import_module("rl_step_vs_trl")
    monkeypatch.setattr(decode_speed, "NEW_TOKENS", 3)
    monkeypatch.setattr(decode_speed, "PROMPT_TOKENS", 4)
    monkeypatch.setattr(decode_speed, "REPEATS", 1)
    out = tmp_path / "decode.md"
    monkeypatch.setattr(sys, "argv", ["decode_speed.py", "--model", rl_step_vs_trl.model_dir("tiny"),
                                      "--rows", "4,8", "--out", str(out)])
    decode_speed.main()
    rows = [line.strip("| ").split(" | ") for line in out.read_text().splitlines() if line[:3] in ("| 4", "| 8")]
    assert [int(r[0]) for r in rows] == [4, 8]
    for cells in rows:
        count, mine, theirs = int(cells[0]), float(cells[1]), float(cells[2])
        assert float(cells[3].rstrip("x")) == pytest.approx(theirs / mine, rel=0.02, abs=0.01)
        assert float(cells[4]) == pytest.approx(count / mine * 1e3, rel=0.02, abs=1)
        assert float(cells[5]) == pytest.approx(count / theirs * 1e3, rel=0.02, abs=1)
