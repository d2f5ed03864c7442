"""Scale-out through accelerate: 2 gloo ranks on CPU match a single process on the same global batch."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).parent / "ddp_lm.py"


def saved(out, tag):
    return load_file(str(out / tag / "lm" / "model" / "model.safetensors"))


@pytest.mark.skipif(shutil.which("accelerate") is None and not Path(sys.executable).with_name("accelerate").exists(),
                    reason="accelerate CLI not installed")
def test_two_process_ddp_matches_single_process(tmp_path):
    launcher = str(Path(sys.executable).with_name("accelerate"))
    single = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "single"], capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
                          str(SCRIPT), str(tmp_path), "ddp"], capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]  # a rank drift would raise in check_ranks_agree
    a, b = saved(tmp_path, "single"), saved(tmp_path, "ddp")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    start = saved(tmp_path, "single")  # training moved the weights at all
    from reasonrl.plugins.models import TinyModelParams, tiny_model

    base, _ = tiny_model(TinyModelParams(hidden_size=32), seed=0)
    assert not torch.allclose(base.state_dict()["model.norm.weight"], start["model.norm.weight"])


def test_deepspeed_zero2_single_process_matches_plain_adamw(tmp_path):
    pytest.importorskip("deepspeed")
    no_clip = '{"max_grad_norm": 1000000.0}'  # the engines' clipping norms differ (seen with clipping on)
    plain = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "plain", no_clip], capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr[-3000:]
    zero = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "zero2", '{"deepspeed": {"zero_stage": 2}, "max_grad_norm": 1000000.0}'],
                          capture_output=True, text=True, timeout=600)
    assert zero.returncode == 0, zero.stderr[-3000:]
    a, b = saved(tmp_path, "plain"), saved(tmp_path, "zero2")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-4), key
