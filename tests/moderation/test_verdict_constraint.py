"""verdict_close: whatever the policy writes, the answer ends with a verdict that parses."""

import random

from reasonrl.moderation_plugins.constraints import Verdict, VerdictRule
from reasonrl.moderation_plugins.parsing import parse_verdict
from reasonrl.plugins.engine.models import char_tokenizer
from reasonrl.testing import random_decode

LABELS = ["benign", "malicious"]


def test_the_verdict_reader_accepts_labels_then_a_probability():
    assert Verdict(LABELS).feed(" malicious\nProbability: 0.85")
    assert Verdict(LABELS).feed(" benign\nProbability: 1.00")
    assert not Verdict(LABELS).feed(" harmless")
    assert not Verdict(LABELS).feed(" benign\nProbability: 1.5")
    assert not Verdict(LABELS).feed(" benign\nProbability: 0.123")
    assert not Verdict(LABELS).feed(" benign\nProbability: 2")
    done = Verdict(LABELS)
    done.feed(" benign\nProbability: 0.")
    assert not done.complete  # a bare "0." may not end the answer
    done.feed("5")
    assert done.complete and not done.full


def test_random_policies_always_end_with_a_parseable_verdict_within_the_budget():
    tok = char_tokenizer("abcdefghijklmnopqrstuvwxyzLP:. \n0123456789")
    rng = random.Random(0)
    for trial in range(40):
        rule = VerdictRule(tok, LABELS)
        budget = rule.room() + rng.randrange(0, 40)
        text, written = random_decode(rule, tok, budget, rng)
        parsed = parse_verdict(text, LABELS)
        assert written <= budget and parsed.label in LABELS and parsed.probability is not None, (trial, text)


def test_a_verdict_the_model_starts_itself_is_completed_with_a_known_label():
    tok = char_tokenizer("abcdefghijklmnopqrstuvwxyzLP:. \n0123456789")
    rule = VerdictRule(tok, LABELS)
    rule.set_budget(200)
    for token in tok("it asks to ignore the rules\nLabel:", add_special_tokens=False)["input_ids"]:
        rule.advance(token)
    allowed = {tok.decode([i]) for i in rule.allowed()}
    assert allowed == {" "}
    text, _ = random_decode(rule, tok, 60, random.Random(1))
    parsed = parse_verdict("it asks to ignore the rules\nLabel:" + text, LABELS)
    assert parsed.label in LABELS and parsed.probability is not None and not rule.forced
