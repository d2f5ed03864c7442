import importlib
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def test_layouts_put_the_numbers_at_a_fixed_distance_or_after_a_marker():
    probe = importlib.import_module("gr2_copy_probe")
    rng = random.Random(0)
    for _ in range(20):
        prompt, answer = probe.example("position", rng)
        assert prompt[-8:] == [probe.MARKER] + answer + probe.CUE  # the copy distance never changes
        prompt, answer = probe.example("content", rng)
        at = prompt.index(probe.MARKER)
        assert prompt[at + 1:at + 4] == answer and prompt[-4:] == probe.CUE
        assert 10 + 4 <= len(prompt) - at - 4 <= 80 + 4  # the marker sits somewhere in the last 80 tokens
        assert len(set(answer)) == 3 and all(a in probe.DIGITS for a in answer)


def test_the_table_has_one_row_per_checkpoint(tmp_path, monkeypatch):
    probe = importlib.import_module("gr2_copy_probe")
    monkeypatch.setattr(probe, "PROMPT_TOKENS", 80)
    out = tmp_path / "probe.md"
    probe.main(["--steps", "2", "--every", "1", "--out", str(out)])
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [int(r[0].strip("| ")) for r in rows] == [1, 2]
    assert all(0.0 <= float(cell.strip("| ")) <= 1.0 for r in rows for cell in r[1:])
