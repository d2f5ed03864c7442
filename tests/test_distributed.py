"""Scale-out through accelerate: 2 gloo ranks on CPU match a single process on the same global batch."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reasonrl.testing import free_port

SCRIPT = Path(__file__).parent / "ddp_lm.py"
RL_SCRIPT = Path(__file__).parent / "ddp_rl.py"
NO_LAUNCHER = shutil.which("accelerate") is None and not Path(sys.executable).with_name("accelerate").exists()


def saved(out, tag, stage="lm"):
    return load_file(str(out / tag / stage / "model" / "model.safetensors"))


def launch_two(script, out, tag, port):
    launcher = str(Path(sys.executable).with_name("accelerate"))
    return subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
                           str(script), str(out), tag], capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(NO_LAUNCHER, reason="accelerate CLI not installed")
def test_two_process_ddp_matches_single_process(tmp_path):
    single = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "single"], capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = launch_two(SCRIPT, tmp_path, "ddp", free_port())
    assert ddp.returncode == 0, ddp.stderr[-3000:]  # a rank drift would raise in check_ranks_agree
    a, b = saved(tmp_path, "single"), saved(tmp_path, "ddp")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    start = saved(tmp_path, "single")  # training moved the weights at all
    from reasonrl.plugins.engine.models import TinyModelParams, tiny_model

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


@pytest.mark.skipif(NO_LAUNCHER, reason="accelerate CLI not installed")
def test_two_process_rl_matches_single_process(tmp_path):
    """Each rank samples its half of the global prompts (groups stay whole), losses use global
    totals, and per-prompt seeds make the samples independent of the split."""
    import json

    single = subprocess.run([sys.executable, str(RL_SCRIPT), str(tmp_path), "single"], capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = launch_two(RL_SCRIPT, tmp_path, "ddp", free_port())
    assert ddp.returncode == 0, ddp.stderr[-3000:]  # a rank drift would raise in check_ranks_agree
    history = {tag: json.loads((tmp_path / tag / "rl" / "history.json").read_text()) for tag in ("single", "ddp")}
    assert [h["reward/mean"] for h in history["ddp"]] == pytest.approx([h["reward/mean"] for h in history["single"]])
    # the averaged gradient equals the single-process one: Adam would hide a wrong scale, its norm does not
    norms = {tag: [h["optim/grad_norm"] for h in rows if "optim/grad_norm" in h] for tag, rows in history.items()}
    assert any(n > 0 for n in norms["single"]) and norms["ddp"] == pytest.approx(norms["single"], rel=1e-4)
    a, b = saved(tmp_path, "single", "rl"), saved(tmp_path, "ddp", "rl")
    for key in a:  # Adam turns the all-reduce's float rounding on near-zero gradients into ~1e-5 moves
        assert torch.allclose(a[key], b[key], atol=2e-4), key
    assert [h["groups/kept"] for h in history["ddp"]] == [4.0, 4.0, 4.0]
    assert len((tmp_path / "ddp" / "attempts.jsonl").read_text().splitlines()) == 1  # files from the main process only
