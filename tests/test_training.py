import math

import pytest
import torch
from safetensors.torch import load_file

from reasonrl.core.config import resolve_config
from reasonrl.core.pipeline import run_pipeline
from reasonrl.plugins.engine.checkpoint import flatten_optimizer_state, unflatten_optimizer_state
from reasonrl.plugins.engine.rl import RLStage
from reasonrl.plugins.engine.supervised import pack_sequences, weighted_nll


def test_weighted_nll_by_hand():
    # two positions, vocab 2; p(label) = 0.5 and 0.25, weights 0.5 (reasoning) and 1.0 (answer)
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.75, 0.25]]]))
    loss = weighted_nll(logits, torch.tensor([[0, 1]]), torch.tensor([[0.5, 1.0]]))
    assert loss.item() == pytest.approx((0.5 * math.log(2) + 1.0 * math.log(4)) / 2)
    masked = weighted_nll(logits, torch.tensor([[0, 1]]), torch.tensor([[0.0, 1.0]]))
    assert masked.item() == pytest.approx(math.log(4))


def test_weighted_nll_gradients_equal_the_log_softmax_formula():
    # the loss never keeps a vocabulary-sized log-softmax; values and gradients are unchanged
    logits = torch.randn(2, 5, 50, requires_grad=True)
    labels, weights = torch.randint(0, 50, (2, 5)), torch.rand(2, 5)
    reference = -(logits.log_softmax(-1).gather(-1, labels[..., None]).squeeze(-1) * weights).sum() / 10
    (expected,) = torch.autograd.grad(reference, logits)
    loss = weighted_nll(logits, labels, weights)
    (got,) = torch.autograd.grad(loss, logits)
    assert torch.allclose(loss, reference, atol=1e-6) and torch.allclose(got, expected, atol=1e-7)


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


def test_dapo_clip_higher_acts_only_with_several_updates_per_batch(tmp_path, reasonrl_registry):
    import json

    def clip_fractions(updates):
        config = rl_config(tmp_path / str(updates), steps=3, updates_per_batch=updates, lr=5e-2, checkpoint_every=0)
        run_pipeline(config, echo=lambda m: None)
        history = json.loads((tmp_path / str(updates) / "r" / "rl" / "history.json").read_text())
        return [h["optim/clip_fraction"] for h in history if "optim/clip_fraction" in h]

    assert all(f == 0.0 for f in clip_fractions(1))  # ratio 1 on the batch it was sampled from
    assert any(f > 0.0 for f in clip_fractions(2))  # the second update moves off-policy: the clip bites


def sft_stage(tmp_path, rows, **extra):
    import json

    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stage = {"stage": "sft", "id": "sft", "model": {"source": "tiny", "tiny": {"hidden_size": 32}},
             "dataset": {"name": "jsonl", "params": {"files": {"train": str(data)}}}, "batch_size": 2, "epochs": 1,
             "progress": False, **extra}
    return resolve_config({"run_name": "s", "output_dir": str(tmp_path / "runs"), "stages": [stage]})


def test_sft_never_cuts_trained_tokens(tmp_path, reasonrl_registry):
    from reasonrl.core.errors import ReasonRLError

    rows = [{"prompt": "12>", "completion": "12" * 20}, {"prompt": "3>", "completion": "3"}]
    with pytest.raises(ReasonRLError, match=r"1 of 2 examples are longer than max_length \(16 tokens; the longest "
                                            r"has 4\d\).*raise max_length to at least 4\d or leave it unset"):
        run_pipeline(sft_stage(tmp_path / "a", rows, max_length=16), echo=lambda m: None)
    outputs = run_pipeline(sft_stage(tmp_path / "b", rows), echo=lambda m: None)  # unset: sized from the data
    assert outputs["sft"]["steps"] == 1


def test_sft_encodes_the_whole_example_and_can_ignore_segments(tmp_path, reasonrl_registry):
    from reasonrl.core.manager import get_registry
    from reasonrl.plugins.engine.models import ModelSpec, TinyModelParams, load_policy

    rows = [{"prompt": "12>", "segments": [["9" * 30, 0.5], ["21", 1.0]], "answer": "21"}]
    config = sft_stage(tmp_path, rows, segments_field=None, completion_field="answer")
    stage = get_registry().build("stages", "sft", config.stages[0].params)
    _, stage.tokenizer = load_policy(ModelSpec(source="tiny", tiny=TinyModelParams(hidden_size=32)))
    ids, weights = stage.encode(rows[0])
    prompt = len(stage.tokenizer("12>", add_special_tokens=False)["input_ids"])
    answer = len(stage.tokenizer("21", add_special_tokens=False)["input_ids"])
    assert len(ids) == prompt + answer + 1 and ids[-1] == stage.tokenizer.eos_token_id
    assert weights == [0.0] * prompt + [1.0] * (answer + 1)  # the reasoning segments are not trained


def test_rl_logs_metrics_that_are_not_rewards(tmp_path, reasonrl_registry, register_plugin):
    import json
    import types

    from reasonrl import hookimpl

    class Length:
        def __init__(self, params=None):
            pass

        def __call__(self, prompts, completions, examples):
            return [{"chars": float(len(c)), "never": None} for c in completions]

    plugin = types.ModuleType("metric_plugin")
    plugin.register_reward_functions = hookimpl(lambda register: register("chars_metric", Length))
    register_plugin(plugin, name="metric_plugin")
    config = rl_config(tmp_path, steps=2, metrics=["chars_metric"], checkpoint_every=0)
    run_pipeline(config, echo=lambda m: None)
    history = json.loads((tmp_path / "r" / "rl" / "history.json").read_text())
    assert all(h["metric/chars"] >= 0 and "metric/never" not in h for h in history)
    assert all("reward/chars" not in h for h in history)  # never part of the reward
