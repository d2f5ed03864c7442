import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


def test_paired_field_table_by_hand(tmp_path):
    from moderation_paired import paired_field, table

    rows = {"a row": [1.0, 2.0, 3.0, None], "b: row": [2.0, 4.0, 6.0, 9.0]}
    for name, words in rows.items():
        safe = "".join(c if c.isalnum() else "_" for c in name)
        lines = [json.dumps({"id": i, "reasoning_words": w}) for i, w in enumerate(words)]
        (tmp_path / f"outputs_{safe}.jsonl").write_text("\n".join(lines) + "\n")
    text = table(tmp_path, [("a row", "b: row")], ["reasoning_words"])
    # the 4th example has no value in the baseline: left out of the pair, not of each row's own mean;
    # pairs (1, 2), (2, 4), (3, 6): mean difference (1 + 2 + 3) / 3 = 2
    assert "| reasoning_words | b: row - a row | 2.000 | 5.250 | +2.000 |" in text
    assert text.rstrip().endswith("| 3 |")
    result = paired_field([{"x": 1.0}, {"x": 2.0}], [{"x": 2.0}, {"x": 4.0}], "x")
    low, high = result["ci95"]
    assert result["difference"] == 1.5 and 1.0 <= low <= high <= 2.0  # resamples of the diffs 1 and 2
