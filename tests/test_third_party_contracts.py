"""Components written only from ``reasonrl.core.contracts``, as a third party would write them,
run inside the real ``rl``, ``sft`` and ``gr2_prepare`` stages.

If a stage uses more of a component than its contract declares (an argument, an attribute,
a method), these stubs do not have it and the stage fails here.
"""

import json
import math
import types
from dataclasses import replace

import pytest
import torch

from reasonrl import hookimpl
from reasonrl.core.config import resolve_config
from reasonrl.core.contracts import RolloutBatch, Rollouts
from reasonrl.core.pipeline import run_pipeline

TINY = {"source": "tiny", "tiny": {"hidden_size": 32, "intermediate_size": 64}}


class StubEngine:
    """RolloutEngine: samples token by token from the model (no cache), honouring the
    optional generator and constraints exactly as the contract describes them."""

    temperature = 1.0

    def __init__(self, params):
        self.max_new_tokens = 4

    @torch.no_grad()
    def generate(self, model, tokenizer, prompts, group_size, generator=None, constraints=None):
        device = next(model.parameters()).device
        prompt_ids = [torch.tensor(tokenizer(p, add_special_tokens=False)["input_ids"], device=device) for p in prompts]
        rows, logprob_rows = [], []
        for index, ids in enumerate(prompt_ids):
            for _ in range(group_size):
                rule = None if constraints is None else constraints[index]
                own = generator[index] if isinstance(generator, list) else generator  # one per prompt, or shared
                tokens, logprobs = self._sample(model, ids, own, rule)
                rows.append(tokens)
                logprob_rows.append(logprobs)
        completion = torch.stack(rows)
        return Rollouts(prompt_ids=prompt_ids, completion_ids=completion, mask=torch.ones_like(completion),
                        logprobs=torch.stack(logprob_rows), truncated=torch.ones(len(rows), dtype=torch.bool),
                        texts=[tokenizer.decode(r) for r in rows], group_size=group_size)

    def _sample(self, model, ids, generator, rule):
        tokens, logprobs = [], []
        for _ in range(self.max_new_tokens):
            sequence = torch.cat([ids, torch.tensor(tokens, dtype=torch.long, device=ids.device)])
            logits = model(input_ids=sequence[None]).logits[0, -1].float() / self.temperature
            allowed = rule.allowed() if rule is not None else None
            if allowed is not None:
                logits = logits.masked_fill(~torch.isin(torch.arange(len(logits)), torch.tensor(allowed)), -math.inf)
            log_probs = logits.log_softmax(-1)
            token = int(torch.multinomial(log_probs.exp(), 1, generator=generator))
            tokens.append(token)
            logprobs.append(log_probs[token])
            if rule is not None:
                rule.advance(token)
        return torch.tensor(tokens, device=ids.device), torch.stack(logprobs)


class StubOptimizer:
    """PolicyOptimizer: REINFORCE with a group-mean baseline; prepare returns a new batch."""

    needs_reference = False
    needs_values = False

    def __init__(self, params):
        self.prepared_inputs = []

    def keep_group(self, rewards):
        return True

    def prepare(self, batch: RolloutBatch) -> RolloutBatch:
        means = torch.zeros(int(batch.groups.max()) + 1).index_add_(0, batch.groups, batch.rewards) / batch.group_size
        advantages = (batch.rewards - means[batch.groups])[:, None] * batch.mask
        return replace(batch, advantages=advantages)

    def loss(self, batch, new_logprobs, ref_logprobs=None, values=None):
        loss = -(batch.advantages * new_logprobs * batch.mask).sum() / max(batch.total_tokens, 1)
        return loss, {"stub": 1.0}


class StubDataset:
    """Dataset: splits() -> {split: [example, ...]}."""

    def __init__(self, params):
        pass

    def splits(self):
        rows = [{"prompt": f"{a}{b}", "completion": f"{b}{a}", "answer": f"{b}{a}"} for a in "123" for b in "456"]
        return {"train": rows, "test": rows[:2]}


class StubItemTokenizer:
    """ItemTokenizer: item i gets the code (i // 32, i % 32), unique by construction."""

    codes = None

    def __init__(self, params):
        pass

    def fit(self, embeddings):
        self.codes = self.encode(embeddings)
        return self

    def encode(self, embeddings):
        return [(i // 32, i % 32) for i in range(len(embeddings))]

    def tokens(self, codes):
        return [f"<x_{a}><y_{b}>" for a, b in codes]

    def vocabulary(self):
        return [f"<x_{a}>" for a in range(64)] + [f"<y_{b}>" for b in range(32)]

    def report(self):
        return {"uniqueness": len(set(self.codes)) / len(self.codes)}


@pytest.fixture
def stubs(register_plugin):
    plugin = types.ModuleType("third_party_stubs")
    plugin.register_rollout_engines = hookimpl(lambda register: register("stub_engine", StubEngine))
    plugin.register_policy_optimizers = hookimpl(lambda register: register("stub_optimizer", StubOptimizer))
    plugin.register_datasets = hookimpl(lambda register: register("stub_data", StubDataset))
    plugin.register_item_tokenizers = hookimpl(lambda register: register("stub_tokenizer", StubItemTokenizer))
    return register_plugin(plugin, name="third_party_stubs")


def test_rl_and_sft_stages_run_third_party_components(tmp_path, stubs):
    stages = [
        {"stage": "sft", "id": "sft", "model": TINY, "dataset": "stub_data", "batch_size": 4, "epochs": 1,
         "progress": False},
        {"stage": "rl", "id": "rl", "model": {"source": "stage", "stage": "sft"}, "dataset": "stub_data",
         "rollout": "stub_engine", "optimizer": "stub_optimizer", "rewards": ["sort_accuracy"], "steps": 2,
         "prompts_per_step": 2, "group_size": 3, "progress": False},
    ]
    config = resolve_config({"run_name": "r", "output_dir": str(tmp_path), "stages": stages})
    outputs = run_pipeline(config, echo=lambda m: None)
    assert outputs["sft"]["steps"] == 2 and outputs["rl"]["steps"] == 2
    history = json.loads((tmp_path / "r" / "rl" / "history.json").read_text())
    assert [h["optim/stub"] for h in history] == [1.0, 1.0] and all(h["completion/length"] == 4 for h in history)
    assert all(h["completion/cut"] == 1.0 for h in history)  # the stub engine reports every answer cut


@pytest.mark.slow
def test_gr2_prepare_runs_a_third_party_item_tokenizer(tmp_path, stubs):
    stage = {"stage": "gr2_prepare", "id": "prepare", "tokenizer": "stub_tokenizer", "history_items": 3,
             "max_users": {"train": 4, "validation": 2, "test": 2}, "progress": False}
    config = resolve_config({"run_name": "r", "output_dir": str(tmp_path), "stages": [stage]})
    outputs = run_pipeline(config, echo=lambda m: None)
    assert outputs["prepare"]["sid_uniqueness"] == 1.0
    tokens = (tmp_path / "r" / "prepare" / "sid_tokens.txt").read_text().split()
    assert tokens[0] == "<x_0>" and len(tokens) == 96
    example = json.loads((tmp_path / "r" / "prepare" / "test.jsonl").read_text().splitlines()[0])
    assert all(sid.startswith("<x_") for sid in example["candidates"])


class ZeroLogprobs(StubEngine):
    @torch.no_grad()
    def _sample(self, model, ids, generator, rule):
        tokens, logprobs = super()._sample(model, ids, generator, rule)
        return tokens, torch.zeros_like(logprobs)


class OneSampleShort(StubEngine):
    def generate(self, *args, **kwargs):
        out = super().generate(*args, **kwargs)
        return replace(out, completion_ids=out.completion_ids[:-1], mask=out.mask[:-1], logprobs=out.logprobs[:-1],
                       truncated=out.truncated[:-1], texts=out.texts[:-1])


class PositiveLogprobs(StubEngine):
    def generate(self, *args, **kwargs):
        out = super().generate(*args, **kwargs)
        return replace(out, logprobs=out.logprobs.abs() + 0.5)


@pytest.mark.parametrize("engine, field, needle", [
    (ZeroLogprobs, "logprobs", "differ from the policy's own log-probs"),
    (OneSampleShort, "completion_ids", "expected a [6, T] long tensor"),
    (PositiveLogprobs, "logprobs", "> 0 on a generated token"),
])
def test_a_broken_rollout_engine_is_named_with_the_field_it_broke(tmp_path, register_plugin, engine, field, needle):
    plugin = types.ModuleType("broken_engine")
    plugin.register_rollout_engines = hookimpl(lambda register: register("broken_engine", engine))
    register_plugin(plugin, name="broken_engine")
    stage = {"stage": "rl", "id": "rl", "model": TINY, "dataset": "sort_digits", "rollout": "broken_engine",
             "rewards": ["sort_accuracy"], "steps": 2, "prompts_per_step": 2, "group_size": 3, "progress": False}
    config = resolve_config({"run_name": "r", "output_dir": str(tmp_path), "stages": [stage]})
    from reasonrl.core.errors import ReasonRLError

    with pytest.raises(ReasonRLError, match=f"engine 'broken_engine' broke its contract in {field}") as caught:
        run_pipeline(config, echo=lambda m: None)
    assert needle in str(caught.value)
    assert not (tmp_path / "r" / "rl" / "model").exists()  # nothing was trained on it
