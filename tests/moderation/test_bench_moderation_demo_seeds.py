import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


def fake_run(folder: Path, seed: int, difference: float, predictions: list[str], kept: int | None) -> Path:
    (folder / "evaluate").mkdir(parents=True)
    (folder / "config.resolved.yaml").write_text(f"seed: {seed}\n")
    report = {"rows": {"RL": {"macro_f1": 0.5, "roc_auc_model": 0.75, "predictions": predictions},
                       "TF-IDF": {"macro_f1": 0.25, "roc_auc_model": None, "predictions": ["a", "a", "a", "b"]}},
              "comparisons": [{"baseline": "TF-IDF", "variant": "RL", "difference": difference, "ci95": [-0.5, 0.5]}]}
    (folder / "evaluate" / "report.json").write_text(json.dumps(report))
    if kept is not None:
        (folder / "rl").mkdir()
        (folder / "rl" / "selection.json").write_text(json.dumps({"best": {"step": kept}}))
    return folder


def test_seed_tables_by_hand(tmp_path):
    from moderation_demo_seeds import comparison_table, load_run, rows_table

    runs = [load_run(fake_run(tmp_path / "s0", 0, 0.1, ["b", "a", "b", "b"], kept=4), "evaluate", "rl"),
            load_run(fake_run(tmp_path / "s1", 1, 0.3, ["a", "b", "a", "b"], kept=None), "evaluate", "rl")]
    assert [r["kept"] for r in runs] == [4, None]
    rows = rows_table(runs)
    assert "| 0 | RL | 0.5000 | 0.7500 | 1 / 3 | 0.75 |" in rows  # answers sorted by label: a once, b three times
    assert "| 1 | TF-IDF | 0.2500 | - | 3 / 1 | 0.75 |" in rows
    # diffs 0.1 and 0.3: mean 0.2, sd 0.1414; t(0.975, 1 dof) = 12.706, half-width 12.706 * 0.1414 / sqrt(2) = 1.271
    assert comparison_table(runs).splitlines()[-1] == (
        "| RL - TF-IDF | +0.100 [-0.500, +0.500] | +0.300 [-0.500, +0.500] | +0.2000 [-1.071, +1.471] |")
