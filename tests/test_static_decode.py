"""The static-cache decode path gives the eager loop's tokens and log-probs (issue: a captured
decode step on GPUs; on CPU the same path runs eagerly, and compiled where torch.compile works)."""

import pytest
import torch

from reasonrl.plugins.engine.models import TinyModelParams, tiny_model
from reasonrl.plugins.engine.rollout import HFRolloutEngine, SamplingParams
from reasonrl.plugins.engine.static_decode import length_bucket, row_bucket

PROMPTS = ["4713>", "12>", "0123456789 abc 0123456789 xyz>9"]


@pytest.fixture(scope="module")
def policy():
    model, tokenizer = tiny_model(TinyModelParams(), seed=3)
    return model.eval(), tokenizer


class EndAfter:
    """Free text for ``n`` tokens, then end-of-sequence (rows finish at different times)."""

    def __init__(self, n, eos):
        self.n, self.eos = n, eos

    def allowed(self):
        return [self.eos] if self.n == 0 else None

    def advance(self, token):
        self.n -= 1


class EvenAfterFirst:
    def __init__(self):
        self.position = 0

    def allowed(self):
        return list(range(2, 30, 2)) if self.position >= 1 else None

    def advance(self, token):
        self.position += 1


def decode(policy, mode, prompts=PROMPTS, constraints=None, per_prompt_seeds=False, **sampling):
    model, tokenizer = policy
    settings = {"max_new_tokens": 12, "temperature": 0.9, "prompt_batch_size": 2, **sampling}
    engine = HFRolloutEngine(SamplingParams(compile=mode, **settings))
    generator = [torch.Generator().manual_seed(10 + i) for i in range(len(prompts))] if per_prompt_seeds else \
        torch.Generator().manual_seed(7)
    rules = None if constraints is None else constraints()
    return engine.generate(model, tokenizer, prompts, 3, generator=generator, constraints=rules)


def assert_same(a, b):
    assert torch.equal(a.completion_ids * a.mask, b.completion_ids * b.mask)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.truncated, b.truncated)
    assert torch.allclose(a.logprobs, b.logprobs, atol=1e-5)
    assert a.texts == b.texts


CASES = {
    "greedy": {"top_k": 1},
    "sampled": {},
    "sampled, a stream per prompt": {"per_prompt_seeds": True},
    "top-p": {"top_p": 0.8},
    "stop strings": {"stop_strings": ["a", "7"]},
}


@pytest.mark.parametrize("case", CASES)
def test_static_cache_decodes_like_the_eager_loop(policy, case):
    eager, static = decode(policy, "off", **CASES[case]), decode(policy, "static", **CASES[case])
    assert_same(eager, static)
    assert static.mask.sum() > 0


def test_static_cache_keeps_constraints_and_rows_that_end_early(policy):
    eos = policy[1].eos_token_id

    def ending():
        return [EndAfter(2, eos), EndAfter(100, eos), EndAfter(5, eos)]

    eager, static = decode(policy, "off", constraints=ending), decode(policy, "static", constraints=ending)
    assert_same(eager, static)
    lengths = static.mask.sum(dim=1).tolist()
    # the forced ends (a row may also sample its end sooner), while the middle prompt's rows run on
    assert max(lengths[:3]) <= 3 and max(lengths[6:]) <= 6 and max(lengths[3:6]) > 6
    even_eager = decode(policy, "off", constraints=lambda: [EvenAfterFirst() for _ in PROMPTS])
    even_static = decode(policy, "static", constraints=lambda: [EvenAfterFirst() for _ in PROMPTS])
    assert_same(even_eager, even_static)
    tokens = even_static.completion_ids[:, 1:][even_static.mask[:, 1:].bool()]
    assert (tokens % 2 == 0).all()


def test_a_decoder_is_reused_across_calls_with_few_buckets(policy):
    model, tokenizer = policy
    engine = HFRolloutEngine(SamplingParams(compile="static", max_new_tokens=6, prompt_batch_size=3))
    for _ in range(2):
        engine.generate(model, tokenizer, PROMPTS, 3, generator=torch.Generator().manual_seed(0))
    decoder = engine._decoders[model]
    assert list(decoder.steps) == [(16, 256)]  # 9 rows -> 16, one bucket for both calls
    assert [row_bucket(n) for n in (1, 2, 3, 9, 64)] == [1, 2, 4, 16, 64]
    assert [length_bucket(n) for n in (1, 256, 257)] == [256, 256, 512]


def test_auto_is_eager_off_cuda(policy):
    engine = HFRolloutEngine(SamplingParams(compile="auto"))
    assert engine._mode(policy[0]) == "off"


def test_the_captured_step_compiled_on_cpu_decodes_like_the_eager_loop(policy):
    """``graph`` compiles the step with torch.compile (CUDA graphs need a GPU; on CPU inductor
    compiles the same step): the same tokens and log-probs, rows ending early included."""
    eos = policy[1].eos_token_id

    def ending():
        return [EndAfter(2, eos), EndAfter(100, eos), EndAfter(5, eos)]

    assert_same(decode(policy, "off", constraints=ending), decode(policy, "graph", constraints=ending))
