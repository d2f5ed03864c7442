import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def test_curves_table_by_hand_and_the_figure(tmp_path):
    from rl_curves import pairs, plot_curves

    for stage, words in (("rl_a", [10, 8, 6, 4, 2, 1, 1]), ("rl_b", [10, 12, 14, 16, 18, 20, 22])):
        (tmp_path / stage).mkdir()
        history = [{"metric/reasoning_words": w} for w in words]
        history[0] = {}  # a step without the metric is skipped in the means, not counted as 0
        (tmp_path / stage / "history.json").write_text(json.dumps(history))
    out = tmp_path / "plots" / "curves.png"
    table = plot_curves(tmp_path, {"label only": "rl_a", "+ length": "rl_b"},
                        {"metric/reasoning_words": "reasoning words"}, out)
    # 7 steps: windows of 3 at each end. rl_a: steps 2-3 -> (8 + 6) / 2 = 7; last three 2, 1, 1 -> 1.333
    assert "| stage | metric | first 3 steps | last 3 steps | slope per step [95% CI] |" in table
    assert "| label only | metric/reasoning_words | 7.000 | 1.333 | " in table
    # rl_b is a line through steps 2-7: slope 2 with no residual, so a zero-width interval
    assert "| + length | metric/reasoning_words | 13.000 | 20.000 | +2.000 [+2.000, +2.000] |" in table
    # rl_a: least squares over x = 2..7, y = 8, 6, 4, 2, 1, 1: sum((x - 4.5)(y - 22/6)) / sum((x - 4.5)^2)
    xs, ys = range(2, 8), [8, 6, 4, 2, 1, 1]
    slope = sum((x - 4.5) * (y - 22 / 6) for x, y in zip(xs, ys)) / sum((x - 4.5) ** 2 for x in xs)
    assert f"| label only | metric/reasoning_words | 7.000 | 1.333 | {slope:+.3f} [" in table
    assert out.stat().st_size > 1000
    assert pairs(["a + b=rl_x", "metric/ndcg=NDCG"], "--stage") == {"a + b": "rl_x", "metric/ndcg": "NDCG"}
    with pytest.raises(SystemExit, match="write LABEL=VALUE"):
        pairs(["rl_x"], "--stage")
