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
    # rl_a: steps 2-5 -> (8 + 6 + 4 + 2) / 4 = 5; last five 6, 4, 2, 1, 1 -> 2.8
    assert "| label only | metric/reasoning_words | 5.000 | 2.800 |" in table
    assert "| + length | metric/reasoning_words | 15.000 | 18.000 |" in table
    assert out.stat().st_size > 1000
    assert pairs(["a + b=rl_x", "metric/ndcg=NDCG"], "--stage") == {"a + b": "rl_x", "metric/ndcg": "NDCG"}
    with pytest.raises(SystemExit, match="write LABEL=VALUE"):
        pairs(["rl_x"], "--stage")
