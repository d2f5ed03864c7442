import pytest

from reasonrl.core.errors import ReasonRLError
from reasonrl.gr2_plugins.inference import Reranker
from reasonrl.plugins.engine.models import TinyModelParams, tiny_model

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
    from reasonrl.plugins.engine.models import save_policy

    (tmp_path / "prepare").mkdir()
    (tmp_path / "prepare" / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in ITEMS.values()))
    # positions for the whole prompt: a longer one is refused before decoding (test_serve covers that)
    model, tokenizer = tiny_model(TinyModelParams(alphabet="".join(chr(c) for c in range(32, 127)),
                                                  max_positions=1024))
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


def test_rerank_answers_exactly_as_the_evaluation_measured(tmp_path, reasonrl_registry):
    """Reranker.from_run (behind rerank and serve) picks the report's best variant and decodes it
    with the evaluation's chat template, constraint, answer length and batching."""
    import json

    import sys
    from pathlib import Path

    from reasonrl.gr2_plugins.inference import Reranker

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from smoke_pipelines import run_smoke

    run_dir = run_smoke("gr2", tmp_path)["run_dir"]
    reranker = Reranker.from_run(run_dir, device="cpu")
    assert reranker.settings.stage == "rl" and "best ndcg@5" in reranker.why
    assert reranker.settings.constraint.name == "sid_trie" and reranker.settings.max_new_tokens == 8
    test = [json.loads(line) for line in (run_dir / "prepare" / "test.jsonl").read_text().splitlines()]
    evaluated = [json.loads(line) for line in (run_dir / "evaluate" / "outputs_RL.jsonl").read_text().splitlines()]
    answers = reranker.rerank_many([(e["history"], e["candidate_ids"]) for e in test])
    assert [a.text for a in answers] == [e["output"] for e in evaluated]
    trained = json.loads((run_dir / "rl" / "model" / "inference.json").read_text())  # travels with an export
    assert trained["constraint"]["name"] == "sid_trie" and trained["max_new_tokens"] == 8
    assert trained["origin"] == "training rl" and trained["chat_template"] is False


def test_choose_model_prefers_the_asked_stage_then_the_best_variant_then_the_newest(tmp_path):
    import os

    from reasonrl.core.io import atomic_write_json
    from reasonrl.plugins.engine.manifest import DecodeSettings, choose_model, write_evaluation_manifest, \
        write_training_manifest

    for number, stage in enumerate(["sft", "rl"]):
        model = tmp_path / stage / "model"
        model.mkdir(parents=True)
        (model / "config.json").write_text("{}")
        write_training_manifest(model, DecodeSettings(stage=stage, max_new_tokens=10 + number, origin=f"training {stage}"))
        os.utime(model / "config.json", (1000 + number, 1000 + number))
    settings, why = choose_model(tmp_path)
    assert settings.stage == "rl" and settings.max_new_tokens == 11 and "newest" in why
    rows = {"SFT": {"ndcg@5": 0.4}, "RL": {"ndcg@5": 0.3}}
    (tmp_path / "evaluate").mkdir()
    write_evaluation_manifest(tmp_path / "evaluate", "evaluate", [DecodeSettings(stage="sft", max_new_tokens=50),
                                                                  DecodeSettings(stage="rl", max_new_tokens=60)],
                              "ndcg@5", rows, {"sft": "SFT", "rl": "RL"})
    settings, why = choose_model(tmp_path)
    assert settings.stage == "sft" and settings.max_new_tokens == 50 and settings.origin == "evaluation evaluate"
    assert why == "best ndcg@5 in the report of 'evaluate'"
    assert choose_model(tmp_path, "rl")[0].max_new_tokens == 60
    atomic_write_json(tmp_path / "evaluate" / "inference.json", {"kind": "evaluation", "evaluation": "evaluate",
                                                                 "metric": "ndcg@5", "best": None, "variants": []})
    assert choose_model(tmp_path, "sft")[0].origin == "training sft"  # not evaluated: as trained
