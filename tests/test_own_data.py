"""Bring your own data: hf_dataset on local files, moderation on a user table and policy."""

import json

import pytest

from reasonrl.core.config import resolve_config
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.manager import get_registry
from reasonrl.core.pipeline import run_pipeline

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;'<>\n-_()?!/*#"
TINY = {"source": "tiny", "tiny": {"max_positions": 1024, "alphabet": ALPHABET}}
POLICY = """---
labels: [fine, rude]
---
# Rude replies

A reply is **rude** when it insults the reader or tells them to go away.
"""


def build(name, **params):
    return get_registry().build("datasets", name, params)


def write_parquet(path, rows):
    import pandas as pd

    pd.DataFrame(rows).to_parquet(path)
    return path


def test_hf_dataset_reads_parquet_renames_columns_and_templates(tmp_path):
    rows = [{"question": f"q{i}", "answer": str(i)} for i in range(10)]
    path = write_parquet(tmp_path / "qa.parquet", rows)
    dataset = build("hf_dataset", data_files=str(path), columns={"answer": "completion"},
                    templates={"prompt": "Q: {question} A:"},
                    splits={"train": "train[:80%]", "validation": "train[80%:]"})
    splits = dataset.splits()
    assert [len(splits["train"]), len(splits["validation"])] == [8, 2]
    assert splits["train"][3] == {"question": "q3", "completion": "3", "prompt": "Q: q3 A:"}
    assert splits["validation"][0]["prompt"] == "Q: q8 A:"


def test_hf_dataset_split_files_and_formats_agree(tmp_path):
    rows = [{"text": f"line {i}"} for i in range(6)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "b.csv").write_text("text\n" + "".join(r["text"] + "\n" for r in rows))
    from_json = build("hf_dataset", data_files={"train": str(tmp_path / "a.jsonl")}).splits()
    from_csv = build("hf_dataset", data_files={"train": str(tmp_path / "b.csv")}).splits()
    assert from_json == from_csv == {"train": rows}


@pytest.mark.parametrize("params, message", [
    ({"data_files": "missing.parquet"}, "does not exist"),
    ({"data_files": "qa.parquet", "columns": {"nope": "prompt"}}, "'nope'"),
    ({"data_files": "qa.parquet", "templates": {"prompt": "{question} {nope}"}}, "row 0"),
    ({"data_files": "qa.parquet", "splits": {"train": "dev"}}, "'dev'"),
    ({"data_files": "qa.txt"}, "cannot tell the format"),
])
def test_hf_dataset_errors_name_the_problem(tmp_path, monkeypatch, params, message):
    write_parquet(tmp_path / "qa.parquet", [{"question": "q", "answer": "a"}])
    (tmp_path / "qa.txt").write_text("x\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ReasonRLError, match=message):
        build("hf_dataset", **params).splits()


def test_sft_trains_from_hf_dataset_on_local_parquet(tmp_path):
    rows = [{"q": f"{a}+{b}=", "a": str(a + b)} for a in range(4) for b in range(8)]
    path = write_parquet(tmp_path / "sums.parquet", rows)
    data = {"name": "hf_dataset", "params": {"data_files": str(path), "columns": {"q": "prompt", "a": "completion"}}}
    stages = [{"stage": "sft", "id": "sft", "model": TINY, "dataset": data, "epochs": 2, "batch_size": 8,
               "lr": 3e-3, "progress": False}]
    config = resolve_config({"run_name": "own", "output_dir": str(tmp_path / "runs"), "stages": stages})
    run_pipeline(config, echo=lambda *_: None)
    losses = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["sft/loss"] for r in losses if "sft/loss" in r]
    assert len(losses) == 8  # 32 rows / batch 8 -> 4 steps per epoch, 2 epochs
    assert losses[-1] < losses[0]


def user_table(tmp_path, rows):
    (tmp_path / "policy.md").write_text(POLICY)
    path = tmp_path / "replies.csv"
    lines = ["reply,verdict"] + [f"{text},{label}" for text, label in rows]
    path.write_text("\n".join(lines) + "\n")
    return {"data_files": str(path), "text_column": "reply", "label_column": "verdict",
            "policy": str(tmp_path / "policy.md"), "max_chars": 200}


REPLIES = [(f"thanks for the note number {i}", "fine") for i in range(20)] + \
          [(f"go away you fool number {i}", "rude") for i in range(20)]


def test_moderation_table_uses_the_policy_labels_and_prompt(tmp_path):
    splits = build("moderation_table", **user_table(tmp_path, REPLIES)).splits()
    assert sum(map(len, splits.values())) == 40
    assert {len(splits["test"]), len(splits["validation"])} == {8, 6}  # stratified: 20% / 15% of each label
    example = splits["train"][0]
    assert example["labels"] == ["fine", "rude"] and example["label"] in ("fine", "rude")
    assert "A reply is **rude**" in example["prompt"] and example["content"] in example["prompt"]
    assert "Label: <one of fine, rude>" in example["prompt"]


def test_moderation_table_names_the_first_bad_label(tmp_path):
    rows = REPLIES[:3] + [("you are awful", "mean"), ("so rude", "insulting")]
    with pytest.raises(ReasonRLError, match=r"row 3 of split 'train'.*'mean'.*\['fine', 'rude'\]"):
        build("moderation_table", **user_table(tmp_path, rows)).splits()


def test_moderation_table_that_is_not_utf8_is_a_clear_error(tmp_path):
    params = user_table(tmp_path, REPLIES)
    path = tmp_path / "replies.csv"
    path.write_bytes(path.read_bytes().replace(b"thanks for the note number 3", "caf\u00e9 na\u00efve".encode("latin-1")))
    with pytest.raises(ReasonRLError, match=r"failed: UnicodeDecodeError: .*Check the file's encoding \(UTF-8\)"):
        build("moderation_table", **params).splits()


def test_moderation_table_maps_labels_and_needs_policy_labels(tmp_path):
    params = user_table(tmp_path, [(text, "1" if label == "rude" else "0") for text, label in REPLIES])
    splits = build("moderation_table", label_map={"0": "fine", "1": "rude"}, **params).splits()
    assert {e["label"] for e in splits["train"]} == {"fine", "rude"}
    (tmp_path / "policy.md").write_text("# no front matter\n")
    with pytest.raises(ReasonRLError, match="no 'labels:'"):
        build("moderation_table", label_map={"0": "fine", "1": "rude"}, **params).splits()


def test_moderation_evaluation_on_a_user_table_and_policy(tmp_path):
    data = {"name": "moderation_table", "params": user_table(tmp_path, REPLIES)}
    stages = [
        {"stage": "tfidf_baseline", "id": "tfidf", "dataset": data},
        {"stage": "moderation_evaluate", "id": "evaluate", "dataset": data, "progress": False,
         "sampling": {"max_new_tokens": 4},
         "variants": [{"name": "floor", "baseline_stage": "tfidf"},
                      {"name": "untrained", "model": TINY, "chat_template": False}]}]
    config = resolve_config({"run_name": "mine", "output_dir": str(tmp_path / "runs"), "stages": stages})
    outputs = run_pipeline(config, echo=lambda *_: None)
    report = json.loads((config.run_dir / "evaluate" / "report.json").read_text())
    assert report["examples"] == 8
    assert report["rows"]["floor"]["accuracy"] == outputs["tfidf"]["test/accuracy"] == 1.0  # words separate them
    untrained = report["rows"]["untrained"]
    assert untrained["parse_failure_rate"] == 1.0  # a random tiny model writes no verdict


def test_lm_and_rl_read_an_hf_dataset(tmp_path):
    (tmp_path / "corpus.csv").write_text("body\n" + "".join(f"the number {i} follows {i - 1}\n" for i in range(1, 40)))
    rows = [{"digits": "".join(sorted(f"{i:04d}", reverse=True)), "answer": "".join(sorted(f"{i:04d}"))}
            for i in range(40)]
    path = write_parquet(tmp_path / "sort.parquet", rows)
    stages = [
        {"stage": "lm", "id": "lm", "model": TINY, "seq_len": 32, "batch_size": 4, "steps": 3, "progress": False,
         "dataset": {"name": "hf_dataset", "params": {"data_files": str(tmp_path / "corpus.csv"),
                                                      "columns": {"body": "text"}}}},
        {"stage": "rl", "id": "rl", "model": {"source": "stage", "stage": "lm"}, "rewards": ["sort_accuracy"],
         "dataset": {"name": "hf_dataset", "params": {"data_files": str(path), "templates": {"prompt": "{digits}>"}}},
         "rollout": {"name": "hf", "params": {"max_new_tokens": 4}}, "steps": 2, "prompts_per_step": 2,
         "group_size": 2, "progress": False}]
    config = resolve_config({"run_name": "lmrl", "output_dir": str(tmp_path / "runs"), "stages": stages})
    outputs = run_pipeline(config, echo=lambda *_: None)
    assert outputs["lm"]["steps"] == 3 and outputs["rl"]["steps"] == 2
    from reasonrl.plugins.tracking.trackers import read_metrics

    rl_rows = [r for r in read_metrics(config.run_dir / "metrics.jsonl") if "rl/reward/sort_accuracy" in r]
    assert len(rl_rows) == 2  # the templated prompts were scored against the table's answers
