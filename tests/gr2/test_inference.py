import pytest

from reasonrl.core.errors import ReasonRLError
from reasonrl.gr2_plugins.inference import Reranker
from reasonrl.plugins.models import TinyModelParams, tiny_model

ITEMS = {str(i): {"id": str(i), "sid": f"<|sid_begin|><s_a_{i}><|sid_end|>", "title": f"Film {i}", "year": "1999",
                  "genres": ["Drama"]} for i in range(5)}


@pytest.fixture
def reranker():
    model, tokenizer = tiny_model(TinyModelParams(alphabet="".join(chr(c) for c in range(32, 127))))
    return Reranker(model, tokenizer, ITEMS, max_new_tokens=8)


def test_unknown_items_are_rejected_with_suggestions(reranker):
    assert reranker.resolve(["1", "film 2"], "history") == ["1", "2"]
    with pytest.raises(ReasonRLError, match=r"unknown candidate items \['Flim 3'\].*film 3"):
        reranker.resolve(["Flim 3"], "candidate")


def test_rerank_reports_unparseable_answers(reranker):
    result = reranker.rerank(["0", "1"], ["2", "3", "4"])
    assert result.ranking is None and result.error == "not_json" and isinstance(result.text, str)


def test_from_run_needs_a_prepared_run(tmp_path):
    with pytest.raises(ReasonRLError, match="no \\*/items.jsonl"):
        Reranker.from_run(tmp_path)


def test_rerank_command_runs_on_a_saved_run(tmp_path, reasonrl_registry, capsys):
    import json

    from reasonrl.core.cli import main
    from reasonrl.plugins.models import save_policy

    (tmp_path / "prepare").mkdir()
    (tmp_path / "prepare" / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in ITEMS.values()))
    model, tokenizer = tiny_model(TinyModelParams(alphabet="".join(chr(c) for c in range(32, 127))))
    save_policy(model, tokenizer, tmp_path / "rl" / "model")
    batch = tmp_path / "requests.jsonl"
    batch.write_text(json.dumps({"history": ["0"], "candidates": ["1", "2"]}) + "\n")
    # an answer that does not parse is reported, and the exit status says so
    assert main(["rerank", str(tmp_path), "--batch", str(batch), "--max-new-tokens", "4"]) == 1
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["error"] == "not_json" and result["ranking"] is None
    assert "1 of 1 answers did not parse into a ranking (1 not_json)" in captured.err
    assert main(["rerank", str(tmp_path), "--candidates", "Nope"]) == 2
    assert "unknown candidate items" in capsys.readouterr().err


def test_rerank_batch_file_problems_are_named(tmp_path, reasonrl_registry, capsys):
    from reasonrl.core.cli import main

    assert main(["rerank", str(tmp_path), "--batch", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"history": [], "candidates": ["1", "2"]}\n{oops\n')
    assert main(["rerank", str(tmp_path), "--batch", str(bad)]) == 2
    assert f"{bad}:2: not JSON" in capsys.readouterr().err
