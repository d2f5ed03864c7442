"""Log-probs through the chunked vocabulary projection equal the plain forward's, values and gradients."""

import pytest
import torch

from reasonrl.plugins.engine import logits as chunked
from reasonrl.plugins.engine import scoring
from reasonrl.plugins.engine.logits import chosen_logits, chosen_logprobs, split_policy
from reasonrl.plugins.engine.models import TinyModelParams, tiny_model
from reasonrl.plugins.engine.scoring import completion_logprobs, token_logprobs


@pytest.fixture
def small_chunks(monkeypatch):
    """16-token chunks, so a few rows of a test already span several chunks."""
    monkeypatch.setattr(chunked, "CHUNK_BYTES", 1)
    assert chunked.chunk_tokens(50_000) == 16


def test_chunked_logprobs_and_gradients_equal_the_full_logits(small_chunks):
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 37, bias=True)
    hidden = torch.randn(3, 11, 8, requires_grad=True)  # 33 tokens: chunks of 16, 16, 1
    ids = torch.randint(0, 37, (3, 11))
    expected = token_logprobs(head(hidden), ids, temperature=0.7)
    (expected * torch.arange(33.).reshape(3, 11)).sum().backward()
    grads = [hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()]
    hidden.grad = head.weight.grad = head.bias.grad = None
    got = chosen_logprobs(head, hidden, ids, temperature=0.7)
    (got * torch.arange(33.).reshape(3, 11)).sum().backward()
    assert got.shape == ids.shape and torch.allclose(got, expected, atol=1e-6)
    for a, b in zip([hidden.grad, head.weight.grad, head.bias.grad], grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_chosen_logits_gathers_each_rows_ids(small_chunks):
    torch.manual_seed(1)
    head = torch.nn.Linear(4, 9, bias=False)
    hidden, ids = torch.randn(20, 4), torch.randint(0, 9, (20, 3))
    assert torch.allclose(chosen_logits(head, hidden, ids), head(hidden).gather(1, ids), atol=1e-6)


def test_split_policy_only_for_plain_head_models():
    from transformers import GPT2Config, GPT2LMHeadModel

    model, _ = tiny_model(TinyModelParams(), seed=0)
    split = split_policy(model)
    assert split is not None and split.head is model.lm_head and split.decoder is model.model
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=20, n_positions=16))
    assert split_policy(gpt2) is None  # not in the list of plain decoder -> head models: keeps the plain forward


def score(model, checkpointed, plain, monkeypatch, allowed=None):
    """(log-probs, values, embedding gradient, head-weight gradient) of four fixed completions."""
    from reasonrl.plugins.engine.training import enable_gradient_checkpointing

    torch.manual_seed(0)
    value_head = torch.nn.Linear(model.config.hidden_size, 1)
    if checkpointed:
        enable_gradient_checkpointing(model)
    model.train()
    if plain:
        monkeypatch.setattr(scoring, "split_policy", lambda model: None)
    prompts = [torch.tensor([5, 9, 14, 3]), torch.tensor([7, 2])]
    completions = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [8, 9, 2, 4, 4, 4, 4], [10, 11, 12, 13, 14, 15, 16],
                                [13, 2, 0, 0, 0, 0, 0]])
    logprobs, values = completion_logprobs(model, prompts, completions, 2, 0, 0.7, value_head=value_head,
                                           allowed=allowed, chunked=True)
    (logprobs.sum() + values.sum()).backward()
    monkeypatch.undo()
    return logprobs.detach(), values.detach(), model.model.embed_tokens.weight.grad.clone(), \
        model.model.layers[0].mlp.up_proj.weight.grad.clone()


@pytest.mark.parametrize("checkpointed", [False, True])
def test_completion_scores_split_equal_plain(checkpointed, monkeypatch):
    from reasonrl.plugins.engine.rollout import Excluding

    allowed = [{1: [6, 8, 10]}, {0: Excluding([1, 3])}, {}, {2: [0, 2]}]
    for constraint in (None, allowed):
        monkeypatch.setattr(chunked, "CHUNK_BYTES", 1)
        split = score(tiny_model(TinyModelParams(), seed=3)[0], checkpointed, False, monkeypatch, constraint)
        plain = score(tiny_model(TinyModelParams(), seed=3)[0], checkpointed, True, monkeypatch, constraint)
        for a, b in zip(split, plain):
            assert torch.allclose(a, b, atol=1e-5)


def test_split_policy_keeps_the_plain_forward_inside_wrappers():
    model, _ = tiny_model(TinyModelParams(), seed=0)

    class Wrapper(torch.nn.Module):  # what DDP, FSDP and DeepSpeed look like from outside
        def __init__(self, inner):
            super().__init__()
            self.module = inner

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.module, name)

    wrapped = Wrapper(model)
    assert wrapped.config.model_type == "llama" and split_policy(wrapped) is None


def test_lora_policy_scores_alike_split_or_plain(monkeypatch):
    peft = pytest.importorskip("peft")

    def run(plain):
        model, _ = tiny_model(TinyModelParams(), seed=3)
        torch.manual_seed(0)
        model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                           init_lora_weights=False, task_type="CAUSAL_LM"))
        assert split_policy(model) is not None
        if plain:
            monkeypatch.setattr(scoring, "split_policy", lambda model: None)
        prompts, completions = [torch.tensor([5, 9, 14]), torch.tensor([7, 2])], torch.tensor([[5, 6, 7, 8]] * 4)
        logprobs, _ = completion_logprobs(model.train(), prompts, completions, 2, 0, chunked=True)
        logprobs.sum().backward()
        monkeypatch.undo()
        grads = [p.grad.clone() for n, p in model.named_parameters() if "lora_" in n]
        return logprobs.detach(), grads

    (split, split_grads), (plain, plain_grads) = run(False), run(True)
    assert torch.allclose(split, plain, atol=1e-5) and len(split_grads) == 8  # 2 layers x q, v x A, B
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(split_grads, plain_grads))


def test_the_chunked_projection_is_opt_in(monkeypatch):
    from reasonrl.plugins.engine import supervised

    def refuse(model):
        raise AssertionError("the default path must not split the policy")

    monkeypatch.setattr(scoring, "split_policy", refuse)
    monkeypatch.setattr(supervised, "split_policy", refuse)
    model, _ = tiny_model(TinyModelParams(), seed=3)
    completion_logprobs(model, [torch.tensor([5, 9])], torch.tensor([[5, 6]]), 1, 0)
    supervised.label_logprobs(model, torch.tensor([[5, 9, 14, 3]]), torch.ones(1, 4, dtype=torch.long), 1)
