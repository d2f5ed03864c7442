"""bench/moderation_probe.py: the features it reads are the model's own, padding or not."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reasonrl.moderation_plugins.metrics import roc_auc
from reasonrl.plugins.engine.models import TinyModelParams, tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
LABELS = ["benign", "malicious"]


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("moderation_probe")


def test_batched_features_equal_one_unpadded_forward_each(bench):
    model, tok = tiny_model(TinyModelParams(alphabet="abcdefghijklmnopqrstuvwxyzL:. \n"))
    model.eval()
    prompts = ["short", "a much longer prompt than the first", "mid length one"]
    features, margins = bench.decision_features(model, tok, prompts, LABELS, batch_size=3)
    first = [tok(label, add_special_tokens=False)["input_ids"][0] for label in LABELS]
    assert first[0] != first[1]
    for prompt, row, margin in zip(prompts, features, margins):
        ids = tok(prompt + "Label: ", add_special_tokens=False)["input_ids"]  # no chat template: the raw text
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_hidden_states=True)
        assert row == pytest.approx(out.hidden_states[-1][0, -1].numpy(), abs=1e-4)
        logprobs = out.logits[0, -1].log_softmax(-1)
        assert margin == pytest.approx(float(logprobs[first[1]] - logprobs[first[0]]), abs=1e-4)


def test_the_probe_finds_a_planted_direction_and_not_one_in_noise(bench):
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 240)
    noise = rng.normal(size=(240, 32))
    planted = noise.copy()
    planted[:, 5] += 2.5 * gold  # a lone feature: ROC-AUC 0.96 at best
    names = [LABELS[g] for g in gold]
    for features, low, high in ((planted, 0.8, 1.0), (noise, 0.3, 0.7)):
        probe = bench.fit_probe(features[:160], names[:160])
        scores = probe.predict_proba(features[160:])[:, list(probe.classes_).index("malicious")]
        assert low < roc_auc(scores.tolist(), [n == "malicious" for n in names[160:]]) < high


def test_few_examples_of_a_label_shrink_the_folds(bench):
    features = np.random.default_rng(1).normal(size=(10, 4))
    names = ["malicious"] * 3 + ["benign"] * 7  # 5-fold CV would leave a fold without a malicious example
    probe = bench.fit_probe(features, names)
    assert probe[-1].n_features_in_ == 4 and set(probe.classes_) == set(LABELS)
    with pytest.raises(ValueError):
        bench.fit_probe(features[:4], ["malicious"] + ["benign"] * 3)  # one example of a label: no CV possible
