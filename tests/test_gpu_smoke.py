"""bench/gpu_smoke.py stays runnable: its reduced CPU mode runs every pipeline and the RL step."""

import subprocess
import sys
from pathlib import Path

import pytest

import reasonrl

from reasonrl.plugins.engine.training import training_precision

SCRIPT = Path(reasonrl.__file__).parent / "bench" / "gpu_smoke.py"


def test_reduced_mode_prints_both_tables(tmp_path):
    out = tmp_path / "smoke.md"
    done = subprocess.run([sys.executable, str(SCRIPT), "--reduced", "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = out.read_text()
    assert "(reduced mode)" in table.splitlines()[0]
    for pipeline in ("engine", "gr2", "moderation"):
        assert f"| {pipeline} | ok |" in table
    assert "| short prompt + long answer | " in table and "| long prompt + short answer | " in table


def test_training_precision_follows_the_user_then_accelerate_then_the_device(monkeypatch):
    import torch

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert training_precision("bfloat16", None) == ("bfloat16", None)  # asked for pure bf16: taken as asked
    assert training_precision("auto", "no") == ("float32", "no")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_precision("auto", None) == ("float32", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert training_precision("auto", None) == ("float32", "bf16")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # accelerate's config decides
    assert training_precision("auto", None) == ("float32", None)
