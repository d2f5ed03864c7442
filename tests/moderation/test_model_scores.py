"""The model's own label probabilities: read after the verdict key, exact under padding."""

import pytest
import torch

from reasonrl.moderation_plugins.scores import first_label_tokens, label_probabilities, verdict_prefix
from reasonrl.plugins.engine.models import TinyModelParams, char_tokenizer, tiny_model

LABELS = ["benign", "malicious"]


def test_the_prefix_ends_at_the_last_verdict_key_or_gets_one():
    assert verdict_prefix("why\nLabel: benign\nProbability: 0.2") == "why\nLabel:"
    assert verdict_prefix("Label: x then Label: benign") == "Label: x then Label:"
    assert verdict_prefix("cut reasoning  ") == "cut reasoning\nLabel:"


def test_labels_sharing_a_first_token_cannot_be_scored():
    assert first_label_tokens(char_tokenizer("abcdefghijklmnopqrstuvwxyz "), LABELS) is None  # both start with " "


def test_probabilities_equal_an_unpadded_forward_by_hand():
    torch.manual_seed(0)
    model, tok = tiny_model(TinyModelParams(alphabet="abcdefghijklmnopqrstuvwxyzL:. \n"))
    tok.add_tokens([" benign", " malicious"])
    model.resize_token_embeddings(len(tok))
    first = first_label_tokens(tok, LABELS)
    assert first == tok.convert_tokens_to_ids([" benign", " malicious"])
    prompts, texts = ["short", "a much longer prompt here"], ["it is fine\nLabel: benign", "no verdict"]
    got = label_probabilities(model, tok, prompts, texts, LABELS, batch_size=2)
    for prompt, text, probs in zip(prompts, texts, got):
        ids = tok(prompt + verdict_prefix(text), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        expected = logits[first].softmax(-1).tolist()
        assert probs == pytest.approx(expected, abs=1e-5) and sum(probs) == pytest.approx(1.0)
