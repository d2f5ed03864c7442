"""GR2 on your own interactions table: same path as MovieLens (k-core, leave-one-out, pre-ranker, SIDs)."""

import json

import pytest

from reasonrl.core.cli import main
from reasonrl.core.config import resolve_config
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.pipeline import run_pipeline
from reasonrl.gr2_plugins.data import (
    InteractionsTableParams,
    k_core,
    load_interactions_table,
    load_movielens,
    write_interactions_table,
)


@pytest.fixture(scope="module")
def ml100k():
    return load_movielens("movielens_100k")


def test_movielens_written_as_a_table_reads_back_identical(ml100k, tmp_path):
    path = tmp_path / "ml.csv"
    assert write_interactions_table(ml100k, path) == 100_000
    table = load_interactions_table(InteractionsTableParams(data_files=str(path)))
    assert table.sequences == ml100k.sequences
    assert k_core(table.sequences, 5) == k_core(ml100k.sequences, 5)
    assert table.items["1"] == ml100k.items["1"]
    assert table.items["50"].text == ml100k.items["50"].text == "Star Wars (1977); genres: Action, Adventure, " \
                                                                   "Romance, Sci-Fi, War"


def test_a_table_with_dates_other_column_names_and_no_metadata(tmp_path):
    path = tmp_path / "clicks.jsonl"
    rows = [{"who": "u1", "what": "b", "when": "2024-03-02T10:00:00"},
            {"who": "u1", "what": "a", "when": "2024-03-01"},
            {"who": "u2", "what": "a", "when": "2024-01-05"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = load_interactions_table(InteractionsTableParams(data_files=str(path), user_column="who",
                                                            item_column="what", timestamp_column="when"))
    assert table.sequences == {"u1": ["a", "b"], "u2": ["a"]}
    assert table.items["a"].text == "a"  # no title, year or genres columns: the id stands in


def test_a_bad_timestamp_or_column_is_named(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("user_id,item_id,timestamp\nu1,a,5\nu1,b,yesterday\n")
    with pytest.raises(ReasonRLError, match="row 1 .*'yesterday'"):
        load_interactions_table(InteractionsTableParams(data_files=str(path)))
    with pytest.raises(ReasonRLError, match="no column 'user'"):
        load_interactions_table(InteractionsTableParams(data_files=str(path), user_column="user"))


def test_gr2_prepare_on_a_fetched_table_via_the_cli(tmp_path, capsys):
    table = tmp_path / "interactions.csv"
    assert main(["gr2-table", "movielens_100k", "--to", str(table), "--max-users", "120"]) == 0
    assert "interactions" in capsys.readouterr().out
    stage = {"stage": "gr2_prepare", "id": "prepare", "dataset": "table", "history_items": 3, "progress": False,
             "table": {"data_files": str(table)}, "max_users": {"train": 20, "test": 10, "validation": 10}}
    config = resolve_config({"run_name": "own", "output_dir": str(tmp_path / "runs"), "stages": [stage]})
    summary = run_pipeline(config, echo=lambda *_: None)["prepare"]
    assert summary["dataset"] == "table" and summary["users"] == 120  # every exported user has >= 20 ratings
    assert summary["sid_uniqueness"] >= 0.99
    test = [json.loads(line) for line in (config.run_dir / "prepare" / "test.jsonl").read_text().splitlines()]
    assert len(test) == 10 and all(e["target"] in e["candidate_ids"] for e in test)
    assert 0 <= summary["preranker/test/ndcg@10"] <= 1


def test_dataset_table_needs_its_table():
    with pytest.raises(ReasonRLError, match="exactly when dataset is 'table'"):
        resolve_config({"run_name": "x", "stages": [{"stage": "gr2_prepare", "dataset": "table"}]})


def test_an_item_with_two_titles_is_an_error_naming_it_and_an_empty_cell_says_nothing(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("user_id,item_id,timestamp,title\nu1,50,1,\nu2,50,2,Star Wars\nu3,50,3,Star Wars\n")
    table = load_interactions_table(InteractionsTableParams(data_files=str(path)))
    assert table.items["50"].title == "Star Wars"  # the empty first cell does not rename it "50"
    path.write_text("user_id,item_id,timestamp,title\nu1,50,1,Star Wars\nu2,50,2,Totally Different Film\n")
    with pytest.raises(ReasonRLError, match=r"item '50' has two titles.*'Star Wars' \(row 0\).*"
                                            r"'Totally Different Film' \(row 1\)"):
        load_interactions_table(InteractionsTableParams(data_files=str(path)))


def test_a_text_rating_names_its_row_and_text_ids_after_numeric_ones_are_read(tmp_path, capsys):
    path = tmp_path / "t.csv"
    # thousands of numeric user ids first: the CSV reader's type guess used to fail on "u_x"
    lines = [f"{i % 300},{i % 40},{i},4" for i in range(20_000)] + ["u_x,3,20001,5", ",3,20002,5"]
    path.write_text("user_id,item_id,timestamp,rating\n" + "\n".join(lines) + "\n")
    table = load_interactions_table(InteractionsTableParams(data_files=str(path), rating_column="rating"))
    assert table.sequences["u_x"] == ["3"] and "7" in table.sequences
    assert table.stats["rows_without_ids"] == 1
    assert "1 of 20002 rows have an empty user_id or item_id" in capsys.readouterr().out
    path.write_text(path.read_text() + "u1,3,20003,abc\n")
    with pytest.raises(ReasonRLError, match="row 20002 .*rating 'abc' is not a number"):
        load_interactions_table(InteractionsTableParams(data_files=str(path), rating_column="rating"), min_rating=3)
