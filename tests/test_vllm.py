"""The vllm rollout engine, against a fake ``vllm`` (tests/fake_vllm) that records its calls.

vLLM itself cannot be installed on the CPU machines (nor on the GPU machine lent here), so
these tests check what reasonrl hands vLLM: a loadable model folder, weights under the
plain model's names and shapes (LoRA folded in), the sampling settings, the decoding
constraint as a logits processor, log-probs of the sampled distribution, and sleep/wake
around every rollout. The last test runs only where the real vLLM and a GPU exist.
"""

import sys
from pathlib import Path

import pytest
import torch

from reasonrl.core.errors import ReasonRLError
from reasonrl.plugins.engine.models import ModelSpec, TinyModelParams, load_policy, tiny_model
from reasonrl.plugins.engine.scoring import completion_logprobs
from reasonrl.plugins.engine.vllm_engine import VLLMParams, VLLMRolloutEngine, policy_weights

FAKE = Path(__file__).parent / "fake_vllm"
TINY = TinyModelParams(hidden_size=32, intermediate_size=64)


@pytest.fixture
def fake_vllm(monkeypatch):
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(FAKE))
    import vllm

    assert vllm.__version__ == "0.0-fake"
    vllm.LLM.instances.clear()
    yield vllm
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        del sys.modules[name]


def lora_policy():
    from reasonrl.plugins.engine.models import LoraParams

    model, tokenizer = load_policy(ModelSpec(source="tiny", tiny=TINY, lora=LoraParams(r=4, alpha=8)))
    with torch.no_grad():  # non-zero adapters, so folding them in changes the weights
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model, tokenizer


def test_missing_vllm_gives_an_actionable_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    model, tokenizer = tiny_model(TINY)
    with pytest.raises(ReasonRLError, match=r"pip install 'reasonrl\[vllm\]'"):
        VLLMRolloutEngine(VLLMParams()).generate(model, tokenizer, ["12>"], 2)


def test_lora_weights_are_folded_in_under_the_plain_names_without_touching_training():
    import copy

    model, _ = lora_policy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merged = copy.deepcopy(model).merge_and_unload().state_dict()
    pushed = dict(policy_weights(model))
    assert pushed.keys() == merged.keys()
    for name, tensor in merged.items():
        assert torch.allclose(pushed[name], tensor, atol=1e-6), name
    assert not torch.allclose(pushed["model.layers.0.self_attn.q_proj.weight"],
                              before["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_engine_starts_from_a_loadable_folder_and_pushes_lora_policies(fake_vllm):
    model, tokenizer = lora_policy()
    engine = VLLMRolloutEngine(VLLMParams(max_new_tokens=3, dtype="float32"))
    out = engine.generate(model, tokenizer, ["4713>", "12>"], 2, generator=torch.Generator().manual_seed(0))
    llm = fake_vllm.LLM.instances[-1]  # the fake loaded the folder with transformers: config.json was there
    assert llm.kwargs["logprobs_mode"] == "processed_logprobs" and llm.kwargs["enable_sleep_mode"]
    plain, _ = tiny_model(TINY)
    assert sorted(llm.runner.loaded_names[-1]) == sorted(plain.state_dict())
    assert out.completion_ids.shape[0] == 4 and out.group_size == 2 and len(out.prompt_ids) == 2


def test_logprobs_are_of_the_distribution_the_trainer_scores(fake_vllm):
    model, tokenizer = tiny_model(TINY, seed=1)
    engine = VLLMRolloutEngine(VLLMParams(max_new_tokens=5, temperature=0.7, dtype="float32"))
    out = engine.generate(model, tokenizer, ["4713>", "9>"], 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rescored, _ = completion_logprobs(model, out.prompt_ids, out.completion_ids, 3, tokenizer.pad_token_id,
                                          temperature=0.7)
    assert torch.allclose(rescored * out.mask, out.logprobs * out.mask, atol=1e-4)


def test_weights_are_pushed_after_every_wake_up(fake_vllm):
    model, tokenizer = tiny_model(TINY, seed=1)
    engine = VLLMRolloutEngine(VLLMParams(max_new_tokens=4, dtype="float32"))
    first = engine.generate(model, tokenizer, ["12>"], 2, generator=torch.Generator().manual_seed(0))
    second = engine.generate(model, tokenizer, ["12>"], 2, generator=torch.Generator().manual_seed(0))
    llm = fake_vllm.LLM.instances[-1]
    assert [c[0] for c in llm.calls] == ["collective_rpc", "generate", "sleep", "wake_up", "collective_rpc",
                                         "generate", "sleep"]
    assert ("sleep", 2) in llm.calls
    # same weights, same seed: the same samples, although sleep level 2 zeroed the fake's copy
    assert torch.equal(first.completion_ids, second.completion_ids)


class OnlyTokens:
    """A decoding constraint that allows a fixed set of tokens and counts what it was fed."""

    def __init__(self, allowed):
        self.allowed_ids, self.fed = list(allowed), []

    def allowed(self):
        return self.allowed_ids

    def advance(self, token):
        self.fed.append(token)


def test_constraints_run_as_a_vllm_logits_processor_with_one_state_per_sample(fake_vllm):
    model, tokenizer = tiny_model(TINY, seed=2)
    engine = VLLMRolloutEngine(VLLMParams(max_new_tokens=4, dtype="float32"))
    rules = [OnlyTokens([5, 6]), OnlyTokens([7])]
    out = engine.generate(model, tokenizer, ["12>", "9>"], 3, generator=torch.Generator().manual_seed(0),
                          constraints=rules)
    first, second = out.completion_ids[:3][out.mask[:3].bool()], out.completion_ids[3:][out.mask[3:].bool()]
    assert set(first.tolist()) <= {5, 6} and set(second.tolist()) == {7}
    assert rules[0].fed == [] and rules[1].fed == []  # each sample advanced its own copy
    assert out.logprobs[3:][out.mask[3:].bool()].abs().max() < 1e-6  # one allowed token: probability 1


def test_rl_stage_trains_through_vllm_with_a_constraint_and_importance_weights(fake_vllm, tmp_path,
                                                                                 reasonrl_registry):
    import json

    from reasonrl.core.config import resolve_config
    from reasonrl.core.pipeline import run_pipeline

    stage = {"stage": "rl", "id": "rl", "model": {"source": "tiny", "tiny": TINY.model_dump(),
                                                  "lora": {"r": 4, "alpha": 8}},
             "dataset": {"name": "sort_digits", "params": {"train_size": 16}}, "rewards": ["sort_accuracy"],
             "optimizer": {"name": "dapo", "params": {"dynamic_sampling": False}},
             "rollout": {"name": "vllm", "params": {"max_new_tokens": 4, "dtype": "float32"}},
             "steps": 2, "prompts_per_step": 2, "group_size": 2, "progress": False}
    config = resolve_config({"run_name": "v", "output_dir": str(tmp_path), "trackers": [], "stages": [stage]})
    run_pipeline(config, echo=lambda m: None)
    history = json.loads((config.run_dir / "rl" / "history.json").read_text())
    # the fake samples with the trainer's own float32 numerics: the weights are 1 up to rounding
    assert all(h["is/mean_weight"] == pytest.approx(1.0, abs=1e-3) for h in history)
    assert all(h["is/mean_abs_logprob_gap"] < 1e-3 for h in history)


def test_importance_weights_by_hand():
    from reasonrl.core.contracts import RolloutBatch
    from reasonrl.plugins.engine.rl import RLStage

    batch = RolloutBatch(prompt_ids=[torch.tensor([1])], completion_ids=torch.tensor([[3, 4, 0]]),
                         mask=torch.tensor([[1, 1, 0]]), old_logprobs=torch.tensor([[-1.5, -1.0, 0.0]]),
                         rewards=torch.tensor([1.0]), groups=torch.tensor([0]), truncated=torch.tensor([False]),
                         group_size=1)
    trainer = torch.tensor([[-1.0, -2.0, -3.0]])
    stats = RLStage._importance_weights(batch, trainer, cap=1.5)
    # e^(−1 − (−1.5)) = 1.6487 is capped at 1.5; e^(−2 − (−1)) = 0.3679; the padded token weighs 0
    assert batch.is_weights.tolist()[0] == pytest.approx([1.5, 0.36788, 0.0], abs=1e-4)
    assert torch.equal(batch.old_logprobs, trainer)
    assert stats["is/capped_share"] == 0.5 and stats["is/mean_abs_logprob_gap"] == pytest.approx(0.75)
    assert stats["is/mean_weight"] == pytest.approx((1.5 + 0.36788) / 2, abs=1e-4)


def test_importance_weights_scale_each_tokens_policy_term():
    from reasonrl.plugins.engine.optimizers import clipped_token_loss

    new, old, adv = torch.tensor([[-1.0, -1.0]]), torch.tensor([[-1.0, -1.0]]), torch.tensor([[2.0, 2.0]])
    plain, _ = clipped_token_loss(new, old, adv, 0.2, 0.2)
    weighted, _ = clipped_token_loss(new, old, adv, 0.2, 0.2, is_weights=torch.tensor([[0.5, 1.5]]))
    assert plain.tolist() == [[-2.0, -2.0]] and weighted.tolist() == [[-1.0, -3.0]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM needs a CUDA GPU")
def test_real_vllm_logprobs_match_hf_rescoring_after_a_weight_push():
    pytest.importorskip("vllm")
    if getattr(__import__("vllm"), "__version__", "") == "0.0-fake":
        pytest.skip("the fake is on the path")
    model, tokenizer = tiny_model(TinyModelParams(hidden_size=128, num_heads=2, intermediate_size=256))
    model = model.cuda()
    engine = VLLMRolloutEngine(VLLMParams(max_new_tokens=6, dtype="float32", gpu_memory_utilization=0.2))
    first = engine.generate(model, tokenizer, ["4713>", "12>"], 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # the next call must see the updated weights
    out = engine.generate(model, tokenizer, ["4713>", "12>"], 3, generator=torch.Generator().manual_seed(0))
    assert out.completion_ids.shape[0] == 6 and first.completion_ids.shape[0] == 6
    with torch.no_grad():
        rescored, _ = completion_logprobs(model, out.prompt_ids, out.completion_ids, 3, tokenizer.pad_token_id)
    assert torch.allclose(rescored * out.mask, out.logprobs * out.mask, atol=2e-2)


def test_trained_token_rows_reach_vllm_folded_in(tmp_path):
    import copy

    from reasonrl.plugins.engine.models import LoraParams

    (tmp_path / "t.txt").write_text("<s_a_1>\n")
    model, tokenizer = load_policy(ModelSpec(source="tiny", tiny=TINY, add_tokens="t.txt",
                                             lora=LoraParams(r=4, alpha=8, trainable_tokens="t.txt")), tmp_path)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "trainable_tokens" in name or "lora_B" in name:
                p.normal_(0, 0.5)
    pushed = dict(policy_weights(model))
    # what vLLM would build from the pushed weights: a plain model of the base config; it must
    # compute what the adapted model computes, on a sequence holding the trained token
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_config(copy.deepcopy(model.get_base_model().config))
    missing, unexpected = plain.load_state_dict(pushed, strict=False)
    assert not unexpected and all("lm_head" in name for name in missing), (missing, unexpected)
    plain.tie_weights()
    trained_token = tokenizer.convert_tokens_to_ids("<s_a_1>")
    ids = torch.tensor([[1, 2, trained_token, 3, trained_token]])
    with torch.no_grad():
        assert torch.allclose(plain.eval()(input_ids=ids).logits, model.eval()(input_ids=ids).logits, atol=1e-5)
