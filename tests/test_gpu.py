"""On a CUDA machine: the tiny pipeline of the engine and of each pack runs on the GPU.

Skipped without CUDA (CI has none); ``bench/gpu_smoke.py`` runs the same pipelines and
prints a table. Run with ``pytest -m gpu``.
"""

import json

import pytest
import torch
from safetensors import safe_open

from reasonrl.plugins.training import training_precision
from reasonrl.smoke import PIPELINES, run_smoke

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_trainers_autocast_to_bf16_over_float32_weights_on_a_capable_gpu(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    expected = "bf16" if torch.cuda.is_bf16_supported() else None
    assert training_precision("auto", None) == ("float32", expected)


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_tiny_pipeline_runs_on_the_gpu(name, tmp_path):
    result = run_smoke(name, tmp_path)
    assert result["peak_gpu_mib"] > 0  # the work happened on the GPU
    saved = next(result["run_dir"].glob("*/model/*.safetensors"))
    with safe_open(str(saved), "pt") as weights:
        first = weights.get_tensor(next(iter(weights.keys())))
    assert first.dtype == torch.float32  # trained master weights, not bf16-rounded ones
    if result["report"] is not None:
        rows = result["report"]["rows"]
        assert all(0.0 <= row.get("parse_failure_rate", 0.0) <= 1.0 for row in rows.values())
        assert json.dumps(rows)  # every metric is a plain number
