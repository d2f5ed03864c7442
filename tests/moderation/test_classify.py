import io
import json

import pytest

from reasonrl.core.cli import main
from reasonrl.core.errors import ReasonRLError
from reasonrl.moderation_plugins.inference import Classifier
from reasonrl.plugins.engine.models import TinyModelParams, save_policy, tiny_model


@pytest.fixture
def run_dir(tmp_path):
    model, tokenizer = tiny_model(TinyModelParams(alphabet="".join(chr(c) for c in range(32, 127)), max_positions=2048))
    save_policy(model, tokenizer, tmp_path / "rl" / "model")
    return tmp_path


def test_classify_command_reads_jsonl_and_writes_verdicts(run_dir, reasonrl_registry, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO('{"text": "WIN A PRIZE"}\n{"text": "see you at 3"}\n'))
    assert main(["classify", str(run_dir), "--policy", "spam_email", "--max-new-tokens", "4", "--device", "cpu",
                 "--dtype", "float32"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["text"] for r in rows] == ["WIN A PRIZE", "see you at 3"]
    assert all(r["error"] == "no_label" and r["label"] is None for r in rows)  # an untrained model gives no verdict


def test_classifier_errors(run_dir, tmp_path):
    with pytest.raises(ReasonRLError, match="no trained model"):
        Classifier.from_run(tmp_path / "empty")
    classifier = Classifier.from_run(run_dir, max_new_tokens=2)
    policy = tmp_path / "p.md"
    policy.write_text("---\nversion: 1\n---\nno labels here")
    with pytest.raises(ReasonRLError, match="no 'labels:'"):
        classifier.classify(["x"], str(policy))


def test_inference_model_takes_a_device_and_dtype(run_dir):
    import torch

    classifier = Classifier.from_run(run_dir, device="cpu", dtype="bfloat16")
    assert {p.dtype for p in classifier.model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in classifier.model.parameters()} == {"cpu"}
    assert Classifier.from_run(run_dir).model.dtype == torch.float32  # auto on a CPU machine
