import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

CANDIDATES = ["<a>", "<b>", "<c>"]


def answer(*items):
    return json.dumps({"explanation": "x", "recommendations": list(items)})


def fake_run(tmp_path: Path) -> Path:
    (tmp_path / "prepare").mkdir()
    (tmp_path / "evaluate_copy").mkdir()
    users = ["u1", "u2", "u3"]
    (tmp_path / "prepare" / "test.jsonl").write_text(
        "\n".join(json.dumps({"user": u, "candidates": CANDIDATES}) for u in users))
    outputs = {
        "start": [answer("<a>", "<b>", "<c>"), answer("<a>", "<c>", "<b>"), answer("<c>", "<b>", "<a>")],
        "RL": [answer("<b>", "<a>", "<c>"), answer("<a>", "<b>", "<c>"), "not json"],
    }
    for name, texts in outputs.items():
        (tmp_path / "evaluate_copy" / f"outputs_{name}.jsonl").write_text(
            "\n".join(json.dumps({"user": u, "output": t}) for u, t in zip(users, texts)))
    report = {"rows": {"RL": {}, "pre-ranker": {}, "start": {}}}  # not the config's order
    (tmp_path / "config.resolved.yaml").write_text(
        "stages:\n- id: evaluate_copy\n  variants:\n  - {name: pre-ranker}\n  - {name: start, stage: s}\n"
        "  - {name: RL, stage: r}\n")
    (tmp_path / "evaluate_copy" / "report.json").write_text(json.dumps(report))
    return tmp_path


def test_test_list_table_counts_valid_answers_and_pairs_the_same_lists(tmp_path):
    plot = importlib.import_module("gr2_reward_hacking_plot")
    table = plot.test_list_table(fake_run(tmp_path)).splitlines()
    # start: orders [0,1,2] (tau 1), [0,2,1] (tau 1/3), [2,1,0] (tau -1); first kept on 2 of 3
    assert table[2] == "| start | 3 | 0.67 | +0.111 |"
    # RL: [1,0,2] (tau 1/3), [0,1,2] (tau 1); the third answer does not parse
    assert table[3] == "| RL | 2 | 0.50 | +0.667 |"
    # paired on u1 and u2 only: first kept 1,1 -> 0,1 (-0.5); tau 1, 1/3 -> 1/3, 1 (0)
    row = table[-1]
    assert row.startswith("| RL - start | 2 | -0.500 [")
    assert "| +0.000 [" in row
