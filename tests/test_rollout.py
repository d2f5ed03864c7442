import pytest
import torch

from reasonrl.plugins.engine.models import TinyModelParams, tiny_model
from reasonrl.plugins.engine.rollout import HFRolloutEngine, SamplingParams, filter_logits, left_pad
from reasonrl.plugins.engine.scoring import completion_logprobs


@pytest.fixture(scope="module")
def policy():
    model, tokenizer = tiny_model(TinyModelParams(), seed=3)
    return model.eval(), tokenizer


def naive_logprobs(model, prompt, completion, temperature=1.0):
    ids = torch.cat([prompt, completion])[None]
    logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float() / temperature
    return logits.log_softmax(-1).gather(1, completion[:, None]).squeeze(1)


def test_shared_prefix_logprobs_equal_a_full_forward(policy):
    model, tokenizer = policy
    prompts = [torch.tensor(tokenizer("4713>")["input_ids"]), torch.tensor(tokenizer("12>")["input_ids"])]
    completions = torch.tensor([[5, 6, 7], [8, 9, 2], [10, 11, 12], [13, 2, 0]])
    got, _ = completion_logprobs(model, prompts, completions, group_size=2, pad_id=0, temperature=0.7)
    for row in range(4):
        prompt = prompts[row // 2]
        expected = naive_logprobs(model, prompt, completions[row], temperature=0.7)
        assert torch.allclose(got[row], expected, atol=1e-5), row


def test_generated_logprobs_match_rescoring_and_groups_share_prompts(policy):
    model, tokenizer = policy
    engine = HFRolloutEngine(SamplingParams(max_new_tokens=5, temperature=1.0, prompt_batch_size=2))
    out = engine.generate(model, tokenizer, ["4713>", "9>", "12>"], group_size=3,
                          generator=torch.Generator().manual_seed(0))
    assert out.completion_ids.shape[0] == 9 and out.groups.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    rescored, _ = completion_logprobs(model, out.prompt_ids, out.completion_ids, 3, tokenizer.pad_token_id)
    assert torch.allclose(rescored * out.mask, out.logprobs * out.mask, atol=1e-4)
    for row in range(9):  # truncated means: used every new token without eos
        length = int(out.mask[row].sum())
        ended = out.completion_ids[row, length - 1].item() == tokenizer.eos_token_id
        assert bool(out.truncated[row]) == (not ended and length == 5)
        assert tokenizer.eos_token not in out.texts[row]


def test_stop_strings_end_a_sample(policy):
    model, tokenizer = policy
    engine = HFRolloutEngine(SamplingParams(max_new_tokens=30, top_k=3, stop_strings=list("abcdefghijklm")))
    out = engine.generate(model, tokenizer, ["4713>"] * 4, group_size=4, generator=torch.Generator().manual_seed(1))
    stops = 0
    for row, text in enumerate(out.texts):
        last = out.completion_ids[row, int(out.mask[row].sum()) - 1].item()
        if last != tokenizer.eos_token_id and not out.truncated[row]:
            stops += 1
            assert text[-1] in "abcdefghijklm" and not any(c in "abcdefghijklm" for c in text[:-1])
    assert stops > 0


def test_top_k_one_is_greedy(policy):
    model, tokenizer = policy
    engine = HFRolloutEngine(SamplingParams(max_new_tokens=4, top_k=1))
    a = engine.generate(model, tokenizer, ["55>"], group_size=3, generator=torch.Generator().manual_seed(0))
    assert len(set(a.texts)) == 1


def test_filter_logits_top_p_keeps_the_crossing_token():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, 0, 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(logits, 2, 1.0))
    assert kept.tolist() == [[True, True, False, False]]


def test_left_pad():
    ids, attention = left_pad([torch.tensor([1, 2, 3]), torch.tensor([4])], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and attention.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_exponential_race_sampling_matches_the_distribution():
    from reasonrl.plugins.engine.rollout import sample_tokens

    probs = torch.tensor([[0.6, 0.3, 0.1, 0.0]]).expand(20000, 4)
    draws = sample_tokens(probs, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert torch.allclose(freq, torch.tensor([0.6, 0.3, 0.1, 0.0]), atol=0.015)
    assert freq[3] == 0.0


def test_generation_stops_at_every_eos_id_the_generation_config_lists():
    from reasonrl.plugins.engine.models import ModelSpec, load_policy
    from reasonrl.plugins.engine.rollout import HFRolloutEngine, SamplingParams, stop_token_ids

    model, tokenizer = load_policy(ModelSpec(source="tiny", tiny=TinyModelParams(hidden_size=32, intermediate_size=64)))
    engine = HFRolloutEngine(SamplingParams(max_new_tokens=12, temperature=1.0))
    first = engine.generate(model, tokenizer, ["12"], 4, generator=torch.Generator().manual_seed(3))
    sampled = int(first.completion_ids[0, 0])  # make the first sampled token an end of turn, as chat models do
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, sampled]
    assert stop_token_ids(model, tokenizer) == sorted({tokenizer.eos_token_id, sampled})
    again = engine.generate(model, tokenizer, ["12"], 4, generator=torch.Generator().manual_seed(3))
    assert int(again.mask[0].sum()) == 1 and not bool(again.truncated[0])
    assert again.texts[0] == ""  # an end-of-turn id is not text


def test_gradient_checkpointing_gives_the_same_logprobs_values_and_gradients():
    from reasonrl.plugins.engine.scoring import recomputes_activations
    from reasonrl.plugins.engine.training import enable_gradient_checkpointing

    def run(checkpointing):
        model, tokenizer = tiny_model(TinyModelParams(), seed=3)
        head = torch.nn.Linear(model.config.hidden_size, 1)
        torch.nn.init.constant_(head.weight, 0.01)
        if checkpointing:
            enable_gradient_checkpointing(model)
        model.train()
        assert recomputes_activations(model) == checkpointing
        prompts = [torch.tensor(tokenizer("4713>")["input_ids"]), torch.tensor(tokenizer("12>")["input_ids"])]
        completions = torch.tensor([[5, 6, 7], [8, 9, 2], [10, 11, 12], [13, 2, 0]])
        logprobs, values = completion_logprobs(model, prompts, completions, 2, 0, 0.7, value_head=head)
        (logprobs.sum() + values.sum()).backward()
        grad = model.model.embed_tokens.weight.grad.clone()
        return logprobs.detach(), values.detach(), grad

    # with the prompt's cache dropped (what transformers does under checkpointing), these would differ
    cached, recomputed = run(False), run(True)
    for a, b in zip(cached, recomputed):
        assert torch.allclose(a, b, atol=1e-5)


class PositionRule:
    """A toy stateful constraint whose allowed tokens depend on the position only."""

    def __init__(self):
        self.position = 0

    def advance(self, token):
        self.position += 1


class EvenTokensAfterFirst(PositionRule):
    """Allows only even token ids from the second position on."""

    def allowed(self):
        return list(range(2, 30, 2)) if self.position >= 1 else None


def constrained_rollouts(policy, rule, max_new_tokens: int, seed: int):
    """3 samples for each of 2 prompts under ``rule()``, and what it allowed, replayed per sample."""
    from reasonrl.plugins.engine.rollout import replay_allowed

    model, tokenizer = policy
    engine = HFRolloutEngine(SamplingParams(max_new_tokens=max_new_tokens, temperature=0.8))
    rules = [rule(), rule()]
    out = engine.generate(model, tokenizer, ["4713>", "12>"], 3, generator=torch.Generator().manual_seed(seed),
                          constraints=rules)
    allowed = [replay_allowed(rules[row // 3], out.completion_ids[row, :int(out.mask[row].sum())].tolist())
               for row in range(6)]
    return out, allowed


def test_constrained_rollouts_record_and_train_the_same_renormalised_logprobs(policy):
    model, tokenizer = policy
    out, allowed = constrained_rollouts(policy, EvenTokensAfterFirst, 5, seed=0)
    tokens = out.completion_ids[out.mask.bool()]
    assert all(pos >= 1 for a in allowed for pos in a) and any(allowed)
    assert all(int(out.completion_ids[row, pos]) % 2 == 0 for row, a in enumerate(allowed) for pos in a)
    with torch.no_grad():
        trained, _ = completion_logprobs(model, out.prompt_ids, out.completion_ids, 3, tokenizer.pad_token_id,
                                         temperature=0.8, allowed=allowed)
        unmasked, _ = completion_logprobs(model, out.prompt_ids, out.completion_ids, 3, tokenizer.pad_token_id,
                                          temperature=0.8)
    assert torch.allclose(trained * out.mask, out.logprobs * out.mask, atol=1e-5)
    assert (unmasked * out.mask < trained * out.mask - 1e-3).any()  # the mask raised the constrained ones
    assert tokens.numel() > 0


class ExcludeOddThenAllowEven(PositionRule):
    """Forbids odd ids at even positions (an Excluding) and allows even ids only at odd ones."""

    def allowed(self):
        from reasonrl.plugins.engine.rollout import Excluding

        return Excluding(range(1, 30, 2)) if self.position % 2 == 0 else list(range(2, 30, 2))


def test_excluded_tokens_are_renormalised_alike_when_sampled_and_trained(policy, monkeypatch):
    from reasonrl.plugins.engine import scoring
    from reasonrl.plugins.engine.rollout import Excluding

    model, tokenizer = policy
    out, allowed = constrained_rollouts(policy, ExcludeOddThenAllowEven, 6, seed=1)
    assert any(isinstance(ids, Excluding) for a in allowed for ids in a.values())
    sampled = out.completion_ids[out.mask.bool()]
    assert all(int(t) % 2 == 0 or int(t) >= 30 for t in sampled)  # no odd id below 30 anywhere
    args = (model, out.prompt_ids, out.completion_ids, 3, tokenizer.pad_token_id)
    with torch.no_grad():
        cached, _ = completion_logprobs(*args, temperature=0.8, allowed=allowed)
        unmasked, _ = completion_logprobs(*args, temperature=0.8)
        monkeypatch.setattr(scoring, "recomputes_activations", lambda model: True)  # the path without a cache
        whole, _ = completion_logprobs(*args, temperature=0.8, allowed=allowed)
    for trained in (cached, whole):
        assert torch.allclose(trained * out.mask, out.logprobs * out.mask, atol=1e-5)
    assert (unmasked * out.mask < cached * out.mask - 1e-4).any()


def test_finished_rows_leave_the_batch_and_the_others_sample_as_before(policy):
    from reasonrl.plugins.engine.rollout import HFRolloutEngine, SamplingParams

    model, tokenizer = policy
    eos = tokenizer.eos_token_id

    class EndAfter:
        """Free text for ``n`` tokens, then end-of-sequence."""

        def __init__(self, n):
            self.n = n

        def allowed(self):
            return [eos] if self.n == 0 else None

        def advance(self, token):
            self.n -= 1

    batch_sizes = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: batch_sizes.append(kwargs["input_ids"].shape[0]),
                                           with_kwargs=True)
    engine = HFRolloutEngine(SamplingParams(max_new_tokens=10, temperature=1.0))
    try:
        out = engine.generate(model, tokenizer, ["12", "3"], 2, generator=[torch.Generator().manual_seed(s) for s in (1, 2)],
                              constraints=[EndAfter(2), EndAfter(100)])
    finally:
        hook.remove()
    assert out.mask.sum(dim=1).tolist()[:2] == [3, 3]  # two free tokens, then the forced end
    assert batch_sizes[0] == 2 and batch_sizes[1:3] == [4, 4] and set(batch_sizes[3:]) == {2}  # prefill, then 4 rows, then 2
    # the second prompt's samples are the same as when it decodes alone: its noise does not depend on the other rows
    alone = engine.generate(model, tokenizer, ["3"], 2, generator=[torch.Generator().manual_seed(2)],
                            constraints=[EndAfter(100)])
    assert out.texts[2:] == alone.texts


COMMON = "0123456789 abc 0123456789 xyz>"  # more leading tokens than MIN_SHARED_PREFIX


def test_prompts_that_start_alike_run_their_prefix_once_and_score_as_full_forwards(policy, monkeypatch):
    from reasonrl.plugins.engine import rollout

    model, tokenizer = policy
    prompts = [torch.tensor(tokenizer(COMMON + tail)["input_ids"]) for tail in ("47>", "1>", "123456>")]
    shared = rollout.shared_prefix_length(prompts)
    assert shared >= rollout.MIN_SHARED_PREFIX and all(torch.equal(p[:shared], prompts[0][:shared]) for p in prompts)
    completions = torch.tensor([[5, 6, 7], [8, 9, 2], [10, 11, 12], [13, 2, 0], [7, 7, 7], [3, 4, 5]])

    def scored(minimum):
        monkeypatch.setattr(rollout, "MIN_SHARED_PREFIX", minimum)
        model.zero_grad()
        got, _ = completion_logprobs(model, prompts, completions, group_size=2, pad_id=0, temperature=0.7)
        got.sum().backward()
        return got.detach(), [p.grad.clone() for p in model.parameters()]

    with_prefix, grads = scored(16)
    for row in range(6):
        expected = naive_logprobs(model, prompts[row // 2], completions[row], temperature=0.7)
        assert torch.allclose(with_prefix[row], expected, atol=1e-5), row
    whole, whole_grads = scored(10**9)  # every prompt run whole
    assert torch.allclose(with_prefix, whole, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, whole_grads))
    model.zero_grad()


def test_a_shared_prefix_decodes_like_whole_prompts(policy, monkeypatch):
    from reasonrl.plugins.engine import rollout

    model, tokenizer = policy
    engine = HFRolloutEngine(SamplingParams(max_new_tokens=6, top_k=1, prompt_batch_size=4))
    prompts = [COMMON + tail for tail in ("47>", "1>", "123456>", "9>")]
    assert rollout.shared_prefix_length([torch.tensor([1] * 20), torch.tensor([1] * 20)]) == 19  # each keeps one
    assert rollout.shared_prefix_length([torch.tensor([1] * 20)]) == 0
    shared = engine.generate(model, tokenizer, prompts, group_size=2)
    monkeypatch.setattr(rollout, "MIN_SHARED_PREFIX", 10**9)
    whole = engine.generate(model, tokenizer, prompts, group_size=2)
    assert shared.texts == whole.texts and torch.equal(shared.completion_ids, whole.completion_ids)
    assert torch.allclose(shared.logprobs, whole.logprobs, atol=1e-5)


@pytest.mark.parametrize("chunked", [False, True])
def test_sft_log_probs_with_a_shared_prefix_equal_whole_rows_with_their_gradients(chunked):
    from reasonrl.plugins.engine.supervised import label_logprobs

    model, tokenizer = tiny_model(TinyModelParams(), seed=5)
    model.train()
    rows = [tokenizer(COMMON + tail)["input_ids"] for tail in ("47>123", "1>4", "123456>78")]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    first = len(tokenizer(COMMON)["input_ids"]) + 1

    def scored(shared):
        model.zero_grad()
        logprobs = label_logprobs(model, ids, attention, first, chunked, shared)
        (logprobs * attention[:, first + 1:]).sum().backward()
        return logprobs.detach(), [p.grad.clone() for p in model.parameters()]

    whole, whole_grads = scored(0)
    shared, grads = scored(first - 1)
    assert shared.shape == whole.shape
    assert torch.allclose(shared * attention[:, first + 1:], whole * attention[:, first + 1:], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, whole_grads))
