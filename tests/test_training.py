import math

import pytest
import torch
from safetensors.torch import load_file

from reasonrl.core.config import resolve_config
from reasonrl.core.pipeline import run_pipeline
from reasonrl.plugins.checkpoint import flatten_optimizer_state, unflatten_optimizer_state
from reasonrl.plugins.rl import RLStage
from reasonrl.plugins.supervised import pack_sequences, weighted_nll


def test_weighted_nll_by_hand():
    # two positions, vocab 2; p(label) = 0.5 and 0.25, weights 0.5 (reasoning) and 1.0 (answer)
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.75, 0.25]]]))
    loss = weighted_nll(logits, torch.tensor([[0, 1]]), torch.tensor([[0.5, 1.0]]))
    assert loss.item() == pytest.approx((0.5 * math.log(2) + 1.0 * math.log(4)) / 2)
    masked = weighted_nll(logits, torch.tensor([[0, 1]]), torch.tensor([[0.0, 1.0]]))
    assert masked.item() == pytest.approx(math.log(4))


def test_pack_sequences():
    assert pack_sequences([[1, 2, 3], [4, 5]], seq_len=3, eos_id=0) == [[1, 2, 3], [0, 4, 5]]


def test_optimizer_state_round_trip_without_pickle():
    param = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.AdamW([param], lr=0.1)
    param.sum().backward()
    opt.step()
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    restored = unflatten_optimizer_state(tensors, meta)
    original = opt.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(restored["state"][0][key], original["state"][0][key])


def rl_config(run_dir, optimizer="dapo", steps=4, **extra):
    stage = {"stage": "rl", "id": "rl", "model": {"source": "tiny", "tiny": {"hidden_size": 32, "intermediate_size": 64}},
             "dataset": "sort_digits", "rewards": ["sort_accuracy"], "optimizer": optimizer,
             "rollout": {"name": "hf", "params": {"max_new_tokens": 5}}, "steps": steps, "prompts_per_step": 4,
             "group_size": 4, "micro_batch_prompts": 2, "lr": 1e-3, "checkpoint_every": 1, "progress": False, **extra}
    return resolve_config({"run_name": "r", "output_dir": str(run_dir), "stages": [stage]})


def final_weights(run_dir):
    return load_file(str(run_dir / "r" / "rl" / "model" / "model.safetensors"))


def test_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch, reasonrl_registry):
    run_pipeline(rl_config(tmp_path / "a"), echo=lambda m: None)
    original = RLStage.train_step

    def dies_at_step_2(self, step):
        if step == 2:
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(RLStage, "train_step", dies_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(rl_config(tmp_path / "b"), echo=lambda m: None)
    assert (tmp_path / "b" / "r" / "rl" / "checkpoint").exists()
    replayed = []

    def counts_steps(self, step):
        replayed.append(step)
        return original(self, step)

    monkeypatch.setattr(RLStage, "train_step", counts_steps)
    run_pipeline(rl_config(tmp_path / "b"), echo=lambda m: None)
    assert replayed == [2, 3]  # resumed from the step-2 checkpoint, not from scratch
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("optimizer", ["grpo", "dr_grpo", "ppo", {"name": "grpo", "params": {"beta": 0.05}}])
def test_every_optimizer_runs_a_step(tmp_path, optimizer, reasonrl_registry):
    outputs = run_pipeline(rl_config(tmp_path, optimizer=optimizer, steps=2), echo=lambda m: None)
    assert outputs["rl"]["steps"] == 2 and math.isfinite(outputs["rl"]["reward_last"])


def test_rl_stage_refuses_deepspeed_with_a_clear_error(tmp_path, reasonrl_registry):
    from reasonrl.core.errors import ReasonRLError

    with pytest.raises(ReasonRLError, match=r"DeepSpeed runs sft and lm, not rl.*fsdp: \{\}"):
        run_pipeline(rl_config(tmp_path, deepspeed={"zero_stage": 2}), echo=lambda m: None)


def test_fsdp_needs_gpu_processes_and_says_so(tmp_path, reasonrl_registry):
    from reasonrl.core.errors import ReasonRLError

    with pytest.raises(ReasonRLError, match=r"fsdp is set, but accelerate shards only over GPU processes.*"
                                            r"accelerate launch --num_processes N"):
        run_pipeline(rl_config(tmp_path, fsdp={}), echo=lambda m: None)
