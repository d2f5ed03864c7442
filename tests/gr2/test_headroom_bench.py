"""bench/gr2_headroom.py: its NDCG@5 and power numbers by hand, and a real run on MovieLens-100K."""

import importlib.util
import math
import statistics
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("gr2_headroom", Path(__file__).parents[2] / "bench" / "gr2_headroom.py")
headroom = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(headroom)  # an import error fails the test, never skips it


def test_ndcg_of_a_scorer_by_hand_with_input_order_breaking_ties():
    example = {"target_index": 2, "features": [[0.0], [0.0], [0.0]]}
    assert headroom.ndcg5([example]) == [pytest.approx(1 / math.log2(4))]
    tie = headroom.ndcg5([example], lambda f: [1.0, 1.0, 1.0])
    assert tie == [pytest.approx(1 / math.log2(4))]  # a tie keeps the input order
    first = headroom.ndcg5([example], lambda f: [0.0, 0.0, 5.0])
    assert first == [1.0]


def test_lists_needed_is_the_normal_power_formula():
    differences = [0.1, -0.05, 0.2, 0.0]
    mean, sd = statistics.fmean(differences), statistics.stdev(differences)
    assert headroom.lists_needed(differences) == pytest.approx(((1.96 + 0.8416) * sd / mean) ** 2)
    assert headroom.lists_needed([0.0, 0.0, 0.1, -0.1]) == math.inf


@pytest.mark.slow
def test_headroom_on_movielens_100k_prints_the_rows(capsys):
    assert headroom.main(["--dataset", "movielens_100k", "--train-targets", "2"]) == 0
    out = capsys.readouterr().out
    assert "| chance (exact expectation) | 0.2948 |" in out and "| logistic regression |" in out
    assert "| pre-ranker (input order) |" in out and "later second" in out


def test_the_co_watching_rule_promotes_the_three_most_watched_right_after_in_order():
    column = headroom.FEATURES.index("log_after_last")

    def features(counts):
        return [[0.0] * column + [math.log1p(c)] + [0.0] * (len(headroom.FEATURES) - column - 1) for c in counts]

    scores = headroom.co_watching_rule(features([0, 5, 0, 9, 5, 1, 0]))
    order = sorted(range(7), key=lambda i: (-scores[i], i))
    assert order == [3, 1, 4, 0, 2, 5, 6]  # 9, then the two 5s in input order; the 1 keeps its place
    assert headroom.co_watching_rule(features([0, 0, 0])) == [0.0, 0.0, 0.0]  # nothing stands out: input order
