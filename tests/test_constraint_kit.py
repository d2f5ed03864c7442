"""tokens_accepted: the tokens an answer reader takes, found from their first characters, are
exactly those a check of every token finds (on SmolLM2's 49k-token vocabulary)."""

import pytest
from transformers import AutoTokenizer

from reasonrl.gr2_plugins.constraints import LIST_CHARS, NumberList
from reasonrl.moderation_plugins.constraints import PROBABILITY_KEY, Verdict, VerdictRule
from reasonrl.plugins.engine.constraint_kit import tokens_accepted, tokens_within
from reasonrl.plugins.engine.models import packaged_model_dir


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(packaged_model_dir("smollm2-135m-instruct"))


def every_token(tokenizer, alphabet, accepts) -> list[int]:
    return [i for i, text in tokens_within(tokenizer, alphabet) if accepts(text)]


@pytest.mark.parametrize("written", ["", " ", " mal", " benign", " benign\nProb", " malicious" + PROBABILITY_KEY,
                                     " benign" + PROBABILITY_KEY + "0", " benign" + PROBABILITY_KEY + "0.",
                                     " benign" + PROBABILITY_KEY + "1"])
def test_verdict_tokens_equal_a_check_of_every_token(tokenizer, written):
    verdict = Verdict(["benign", "malicious"])
    assert verdict.feed(written)
    alphabet = VerdictRule(tokenizer, ["benign", "malicious"]).alphabet
    accepts = lambda text: verdict.copy().feed(text)  # noqa: E731
    found = tokens_accepted(tokenizer, alphabet, accepts)
    assert found == every_token(tokenizer, alphabet, accepts) and found


@pytest.mark.parametrize("written", ["", "3", "10, ", "4, 1", "4, 1, 3", "4, 1, 3]"])
def test_number_list_tokens_equal_a_check_of_every_token(tokenizer, written):
    numbers = NumberList(10, 3)
    assert numbers.feed(written)
    accepts = lambda text: numbers.copy().feed(text)  # noqa: E731
    found = tokens_accepted(tokenizer, LIST_CHARS, accepts)
    assert found == every_token(tokenizer, LIST_CHARS, accepts) and found
