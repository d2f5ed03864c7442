import math

import pytest

from reasonrl.moderation_plugins.metrics import accuracy, expected_calibration_error, macro_f1, pr_auc, roc_auc
from reasonrl.moderation_plugins.parsing import NO_LABEL, NO_PROBABILITY, UNKNOWN_LABEL, parse_verdict


def test_accuracy_and_macro_f1_by_hand():
    gold = ["spam", "spam", "ham", "ham"]
    pred = ["spam", None, "spam", "ham"]
    assert accuracy(pred, gold) == 0.5
    # spam: tp 1, fp 1, fn 1 -> 2/4 ; ham: tp 1, fp 0, fn 1 -> 2/3
    assert macro_f1(pred, gold, ["ham", "spam"]) == pytest.approx((0.5 + 2 / 3) / 2)


def test_roc_and_pr_auc_by_hand():
    scores, positive = [0.9, 0.8, 0.7, 0.1], [True, False, True, False]
    # pairs (pos, neg): (0.9,0.8) (0.9,0.1) (0.7,0.8) (0.7,0.1) -> 3 of 4 won
    assert roc_auc(scores, positive) == 0.75
    # positives at ranks 1 and 3: precision 1 and 2/3
    assert pr_auc(scores, positive) == pytest.approx((1 + 2 / 3) / 2)
    assert roc_auc([0.5, 0.5], [True, False]) == 0.5
    assert math.isnan(roc_auc([0.5], [True]))


def test_pr_auc_with_ties_is_order_free_by_hand():
    # one threshold holding both: recall 1 at precision 1/2, whatever the input order
    assert pr_auc([0.5, 0.5], [True, False]) == pr_auc([0.5, 0.5], [False, True]) == 0.5
    # constant scores: the share of positives (24 of 37 in the demo's test split)
    assert pr_auc([0.7] * 37, [True] * 24 + [False] * 13) == pytest.approx(24 / 37)
    # thresholds 0.9 {pos}, 0.5 {pos, neg}, 0.1 {neg}: 1/2 * 1 + 1/2 * 2/3
    assert pr_auc([0.9, 0.5, 0.5, 0.1], [True, False, True, False]) == pytest.approx(0.5 + 1 / 3)


def _cases():
    """Random binary cases with many ties, constant scores, and permutations of each."""
    import random

    rng = random.Random(0)
    cases = []
    for n in (2, 5, 12, 40):
        for levels in (1, 2, 3, 11):
            labels = [rng.random() < 0.4 for _ in range(n)]
            labels[0], labels[-1] = True, False  # both classes present
            scores = [rng.randrange(levels) / max(levels - 1, 1) for _ in range(n)]
            order = list(range(n))
            rng.shuffle(order)
            cases.append((scores, labels))
            cases.append(([scores[i] for i in order], [labels[i] for i in order]))
    return cases


@pytest.mark.parametrize("scores, labels", _cases())
def test_ranking_metrics_equal_scikit_learn_on_ties_constants_and_permutations(scores, labels):
    from sklearn.metrics import average_precision_score, roc_auc_score

    assert pr_auc(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_label_metrics_equal_scikit_learn(seed):
    import random

    from sklearn.metrics import accuracy_score, f1_score

    rng = random.Random(seed)
    labels = ["a", "b", "c"][: 2 + seed % 2]
    gold = [rng.choice(labels) for _ in range(30)]
    predicted = [rng.choice(labels + [None]) for _ in range(30)]  # None: an unparseable answer
    as_text = [p if p is not None else "(none)" for p in predicted]
    assert accuracy(predicted, gold) == pytest.approx(accuracy_score(gold, as_text))
    assert macro_f1(predicted, gold, labels) == pytest.approx(
        f1_score(gold, as_text, labels=labels, average="macro", zero_division=0))
    constant = [labels[0]] * 30  # one label for everything: the other labels' F1 is 0
    assert macro_f1(constant, gold, labels) == pytest.approx(
        f1_score(gold, constant, labels=labels, average="macro", zero_division=0))


def test_expected_calibration_error_by_hand():
    # bin (0.8, 0.9]: confidences 0.9, 0.9 with one correct -> |0.5 - 0.9| weight 2/4
    # bin (0.5, 0.6]: confidences 0.6, 0.6 both correct -> |1 - 0.6| weight 2/4
    ece = expected_calibration_error([0.9, 0.9, 0.6, 0.6], [True, False, True, True])
    assert ece == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    assert expected_calibration_error([1.0], [True]) == 0.0


def test_parse_verdict_classifies_failures():
    ok = parse_verdict("The sender pushes a deal.\n**Label:** spam\nProbability: 85%", ["ham", "spam"])
    assert (ok.label, ok.probability, ok.error, ok.reasoning) == ("spam", 0.85, None, "The sender pushes a deal.")
    assert parse_verdict("no verdict", ["ham", "spam"]).error == NO_LABEL
    assert parse_verdict("Label: eggs\nProbability: 0.2", ["ham", "spam"]).error == UNKNOWN_LABEL
    missing = parse_verdict("Label: ham", ["ham", "spam"])
    assert (missing.label, missing.error) == ("ham", NO_PROBABILITY)
    assert parse_verdict("Label: ham\nProbability: 1.7", ["ham", "spam"]).error == "bad_probability"
    # the last label line wins: a model that changes its mind is read at its final answer
    assert parse_verdict("Label: ham ... wait. Label: spam Probability: 0.6", ["ham", "spam"]).label == "spam"


def test_paired_macro_f1_bootstrap_by_hand():
    from reasonrl.moderation_plugins.metrics import macro_f1, paired_metric_bootstrap

    gold = ["a", "a", "b", "b"]
    f1 = lambda predicted, g: macro_f1(predicted, g, ["a", "b"])  # noqa: E731
    # baseline answers a for all: F1(a) = 2*2 / (2*2 + 2) = 2/3, F1(b) = 0 -> 1/3; the variant is perfect -> 1
    result = paired_metric_bootstrap(gold, ["a"] * 4, gold, f1, samples=200)
    assert result["difference"] == pytest.approx(2 / 3) and result["examples"] == 4
    # on any resample the perfect classifier scores at least as well: the interval cannot go below 0
    assert 0.0 <= result["ci95"][0] <= result["difference"] <= result["ci95"][1] <= 1.0
    same = paired_metric_bootstrap(gold, gold, gold, f1, samples=50)
    assert same["difference"] == 0.0 and same["ci95"] == (0.0, 0.0)
    with pytest.raises(ValueError, match="equally long"):
        paired_metric_bootstrap(gold, ["a"], gold, f1)


def test_reasoning_grounding_by_hand():
    from reasonrl.moderation_plugins.metrics import reasoning_grounding
    from reasonrl.moderation_plugins.rewards import ReasoningGrounding

    content = "WIN a free cruise today"
    prompt = f"Policy: spam is bulk mail.\nContent:\n<<<\n{content}\n>>>"
    # substantive words: cruise, offer, looks, like, bulk, mail, strangers; in the prompt: cruise, bulk, mail
    got = reasoning_grounding("The cruise offer looks like bulk mail from strangers", content, prompt)
    assert got == {"grounded_words": pytest.approx(3 / 7), "cites_content": 1.0}
    # words of the policy only: grounded, but it says nothing about this content
    assert reasoning_grounding("It is bulk mail.", content, prompt) == {"grounded_words": 1.0, "cites_content": 0.0}
    assert reasoning_grounding("", content, prompt) == {"grounded_words": None, "cites_content": 0.0}
    # as an rl metric: the reasoning is what comes before the label
    example = {"content": content, "prompt": prompt, "labels": ["ham", "spam"], "label": "spam"}
    (row,) = ReasoningGrounding()([prompt], ["A free cruise.\nLabel: spam\nProbability: 0.9"], [example])
    assert row == {"grounded_words": 1.0, "cites_content": 1.0, "reasoning_words": 3.0}
