import torch

from reasonrl.gr2_plugins.constraints import SIDConstraint, prompt_sids
from reasonrl.plugins.engine.models import char_tokenizer
from reasonrl.plugins.engine.rollout import Excluding, HFRolloutEngine, constrain

SIDS = ["<|sid_begin|><s_a_1><s_b_1><|sid_end|>", "<|sid_begin|><s_a_1><s_b_2><|sid_end|>",
        "<|sid_begin|><s_a_2><s_b_1><|sid_end|>"]
HISTORY = ["<|sid_begin|><s_a_3><s_b_1><|sid_end|>"]


def tokenizer_with_sids():
    tok = char_tokenizer('abcdefghijklmnopqrstuvwxyz"{}[]:, ')
    tok.add_tokens(["<|sid_begin|>", "<|sid_end|>", "<s_a_1>", "<s_a_2>", "<s_a_3>", "<s_b_1>", "<s_b_2>"])
    return tok


def feed(rule, tok, text):
    for token in tok(text, add_special_tokens=False)["input_ids"]:
        rule.advance(token)


def ids(tok, *tokens):
    return sorted(tok.convert_tokens_to_ids(t) for t in tokens)


def test_sid_trie_in_reasoning_and_in_the_answer_list():
    tok = tokenizer_with_sids()
    rule = SIDConstraint(tok, SIDS, HISTORY)
    assert rule.allowed() == Excluding((tok.eos_token_id,))  # free text, but it may not end before the answer
    feed(rule, tok, "<|sid_begin|>")
    assert rule.allowed() == ids(tok, "<s_a_1>", "<s_a_2>", "<s_a_3>")  # reasoning may cite the history
    feed(rule, tok, "<s_a_1>")
    assert rule.allowed() == ids(tok, "<s_b_1>", "<s_b_2>")
    feed(rule, tok, "<s_b_2>")
    assert rule.allowed() == ids(tok, "<|sid_end|>")
    feed(rule, tok, '<|sid_end|> fits. {"recommendations')
    assert rule.in_answer and rule.allowed() == ids(tok, '"')  # the list's opening is forced
    feed(rule, tok, '": ["')
    assert rule.allowed() == ids(tok, "<|sid_begin|>")
    feed(rule, tok, "<|sid_begin|>")
    assert rule.allowed() == ids(tok, "<s_a_1>", "<s_a_2>")  # candidates only
    feed(rule, tok, '<s_a_1><s_b_2><|sid_end|>')
    assert rule.allowed() == ids(tok, '"')  # then '", "' and the next SID
    feed(rule, tok, '", "<|sid_begin|><s_a_1>')
    assert rule.allowed() == ids(tok, "<s_b_1>")  # <s_a_1><s_b_2> is listed already
    feed(rule, tok, "x")
    assert rule.inside is None and rule.allowed() is None  # broken SID (possible only unconstrained): off shape


def test_the_list_closes_after_the_last_candidate_and_parses():
    from reasonrl.gr2_plugins.parsing import parse_ranking

    tok = tokenizer_with_sids()
    rule = SIDConstraint(tok, SIDS, HISTORY)
    text = '{"explanation": "x", "recommendations": ["'
    feed(rule, tok, text)
    for sid in (SIDS[2], SIDS[0]):
        feed(rule, tok, sid)
        assert rule.allowed() == ids(tok, '"')
        feed(rule, tok, '", "')
        text += sid + '", "'
    feed(rule, tok, SIDS[1])
    text += SIDS[1]
    closing = []
    while (allowed := rule.allowed()) != [tok.eos_token_id]:  # forced: one token at a time
        assert len(allowed) == 1
        closing.append(allowed[0])
        rule.advance(allowed[0])
    text += tok.decode(closing)
    assert text.endswith('"]}') and parse_ranking(text, SIDS).order == [2, 0, 1]


def test_a_word_in_the_reasoning_does_not_open_the_list():
    tok = tokenizer_with_sids()
    rule = SIDConstraint(tok, SIDS, HISTORY)
    feed(rule, tok, "my recommendations are")
    assert not rule.in_answer and rule.allowed() == Excluding((tok.eos_token_id,))
    feed(rule, tok, ' {"recommendations": {')  # a shape the parser will reject: no forcing
    assert rule.in_answer and rule.literal is None and rule.allowed() is None


def test_copies_per_sample_do_not_share_state():
    import copy

    tok = tokenizer_with_sids()
    rule = SIDConstraint(tok, SIDS, HISTORY)
    feed(rule, tok, '{"recommendations": ["')
    first, second = copy.deepcopy(rule), copy.deepcopy(rule)
    feed(first, tok, SIDS[0] + '", "<|sid_begin|><s_a_1>')
    feed(second, tok, "<|sid_begin|><s_a_1>")
    assert first.allowed() == ids(tok, "<s_b_2>") and second.allowed() == ids(tok, "<s_b_1>", "<s_b_2>")


def test_prompt_sids_and_the_logit_mask():
    assert prompt_sids("a " + SIDS[0] + " b " + HISTORY[0]) == [SIDS[0], HISTORY[0]]

    class Only:
        def __init__(self, allowed):
            self.value = allowed

        def allowed(self):
            return self.value

    logits = torch.zeros(3, 5)
    out = constrain(logits, [Only([1, 3]), Only(None), Only([0])], torch.tensor([False, False, True]))
    assert torch.isinf(out[0, [0, 2, 4]]).all() and out[0, 1] == 0 and out[0, 3] == 0
    assert torch.isfinite(out[1]).all() and torch.isfinite(out[2]).all()  # free row; finished row untouched


def test_engine_obeys_a_constraint_for_every_sample():
    from reasonrl.plugins.engine.models import TinyModelParams, tiny_model
    from reasonrl.plugins.engine.rollout import SamplingParams

    model, tok = tiny_model(TinyModelParams(alphabet="abc"), seed=0)
    b = tok.convert_tokens_to_ids("b")

    class AlwaysB:
        def __init__(self):
            self.seen = []

        def allowed(self):
            return [b]

        def advance(self, token):
            self.seen.append(token)

    engine = HFRolloutEngine(SamplingParams(max_new_tokens=5, temperature=1.0))
    out = engine.generate(model, tok, ["ab", "ca"], 3, generator=torch.Generator().manual_seed(0),
                          constraints=[AlwaysB(), AlwaysB()])
    assert out.texts == ["bbbbb"] * 6
    # the recorded log-probs are of the distribution sampled from: one allowed token has probability 1,
    # and the trainer, told what was allowed, scores the same; unmasked it would not
    from reasonrl.plugins.engine.rollout import replay_allowed
    from reasonrl.plugins.engine.scoring import completion_logprobs

    assert out.logprobs.abs().max() < 1e-6
    allowed = [replay_allowed(AlwaysB(), row.tolist()) for row in out.completion_ids]
    with torch.no_grad():
        masked, _ = completion_logprobs(model, out.prompt_ids, out.completion_ids, 3, tok.pad_token_id, allowed=allowed)
        unmasked, _ = completion_logprobs(model, out.prompt_ids, out.completion_ids, 3, tok.pad_token_id)
    assert torch.allclose(masked * out.mask, out.logprobs, atol=1e-5) and (unmasked < -1e-3).all()
    free = engine.generate(model, tok, ["ab"], 4, generator=torch.Generator().manual_seed(0))
    assert any(t != "bbbbb" for t in free.texts)


def test_closing_the_explanation_forces_the_recommendations_key():
    tok = tokenizer_with_sids()
    rule = SIDConstraint(tok, SIDS, HISTORY)
    feed(rule, tok, 'tastes {"explanation": "fits, best')
    # free text inside the explanation: no token that would break the JSON string, and no end
    assert rule.allowed() == Excluding((tok.eos_token_id,))  # a lone quote may start the close
    feed(rule, tok, '", "')
    assert rule.in_answer and rule.allowed() == ids(tok, "r")  # the only valid key comes next
    feed(rule, tok, 'recommendations": ["')
    assert rule.allowed() == ids(tok, "<|sid_begin|>")
    without = SIDConstraint(tok, SIDS, HISTORY)
    feed(without, tok, 'fits, best", "')  # no explanation opened: nothing to close
    assert not without.in_answer and without.allowed() == Excluding((tok.eos_token_id,))


def decode_with(rule, tok, free_text: str, budget: int) -> tuple[str, int]:
    """A stand-in policy: writes ``free_text`` then 'a' forever where free, the first allowed token
    otherwise, until end-of-sequence or the budget. Returns (text, tokens written)."""
    rule.set_budget(budget)
    queue = list(tok(free_text, add_special_tokens=False)["input_ids"])
    out = []
    while len(out) < budget:
        allowed = rule.allowed()
        free = allowed is None or isinstance(allowed, Excluding)
        token = (queue.pop(0) if queue else tok.convert_tokens_to_ids("a")) if free else allowed[0]
        if token == tok.eos_token_id:
            break
        rule.advance(token)
        out.append(token)
    return tok.decode(out), len(out)


def test_a_reasoning_that_runs_long_is_closed_in_time_for_a_whole_answer():
    from reasonrl.gr2_plugins.parsing import parse_ranking

    tok = tokenizer_with_sids()
    for opening, explanation in (("", ""), ('{"explanation": "', "a")):
        rule = SIDConstraint(tok, SIDS, HISTORY)
        room = rule.answer_room()
        text, written = decode_with(rule, tok, opening, budget=room + 20)
        assert rule.forced and written <= room + 20
        parsed = parse_ranking(text, SIDS)
        assert parsed.order is not None and sorted(parsed.order) == [0, 1, 2], text
        # inside the explanation it is closed; outside, a new answer object is opened after the reasoning
        assert ('"explanation": "' + explanation) in text and text.endswith('"]}')
    # with room to spare, nothing is forced: the reasoning may stop by itself
    relaxed = SIDConstraint(tok, SIDS, HISTORY)
    relaxed.set_budget(10_000)
    feed(relaxed, tok, "aaaa")
    assert not relaxed.forced and relaxed.allowed() == Excluding((tok.eos_token_id,))


def test_the_engine_tells_the_budget_to_the_rules_a_replay_uses():
    from reasonrl.plugins.engine.rollout import tell_budget

    tok = tokenizer_with_sids()
    rule = SIDConstraint(tok, SIDS, HISTORY)
    tell_budget([rule, None], 64)
    assert rule.budget == 64
    # a budget smaller than the answer needs opens the answer at once
    tight = SIDConstraint(tok, SIDS, HISTORY)
    tight.set_budget(5)
    assert tight.forced and tight.allowed() == ids(tok, "{")


def test_tokens_that_would_break_the_explanation_string_are_excluded_there():
    from reasonrl.gr2_plugins.constraints import string_breakers

    tok = tokenizer_with_sids()
    added = ['"]}', "a\nb", "\\", '", "', 'x"']  # stray quote, control character, backslash; two fine ones
    tok.add_tokens(added)
    stray, newline, backslash, close, ends_word = tok.convert_tokens_to_ids(added)
    breakers = set(string_breakers(tok))
    assert {stray, newline, backslash} <= breakers and not {close, ends_word} & breakers
    rule = SIDConstraint(tok, SIDS, HISTORY)
    feed(rule, tok, '{"explanation": "fits')
    assert set(rule.allowed()) == breakers | {tok.eos_token_id}
    rule.advance(ends_word)  # 'x"': the quote closes the string, the rest of the close is forced
    assert rule.in_answer and rule.literal == ', "recommendations": ["'


def test_the_budget_begins_answers_only_where_the_config_asks():
    from reasonrl.gr2_plugins.constraints import SIDTrie, SIDTrieParams, constraint_opened

    tok = tokenizer_with_sids()
    example = {"candidates": SIDS, "prompt": " ".join(HISTORY)}
    rollout_rule = SIDTrie().for_example(tok, example)  # rl default: a rollout that never answers must fail
    rollout_rule.set_budget(5)
    assert rollout_rule.budget is None and not rollout_rule.forced
    evaluation_rule = SIDTrie(SIDTrieParams(close_at_budget=True)).for_example(tok, example)
    evaluation_rule.set_budget(5)
    assert evaluation_rule.forced
    text, _ = decode_with(SIDTrie(SIDTrieParams(close_at_budget=True)).for_example(tok, example), tok, "", 60)
    assert constraint_opened(text) and not constraint_opened('{"explanation": "fits", "recommendations": ["x"]}')


def test_an_answer_key_outside_any_object_begins_a_proper_answer_object():
    from reasonrl.gr2_plugins.parsing import parse_ranking

    tok = tokenizer_with_sids()
    rule = SIDConstraint(tok, SIDS, HISTORY)
    text, _ = decode_with(rule, tok, 'fits best", "recommendations', budget=400)
    # the model skipped '{"explanation": "': a new object follows its stray key, and the answer parses
    assert '"recommendations{"explanation": "", "recommendations": ["' in text
    parsed = parse_ranking(text, SIDS)
    assert parsed.valid and sorted(parsed.order) == [0, 1, 2]
    # an object the model did open keeps its own key
    opened = SIDConstraint(tok, SIDS, HISTORY)
    feed(opened, tok, 'fits. {"recommendations')
    assert opened.in_answer and opened.literal == '": ["'


def test_rollouts_get_no_repair_for_an_answer_key_outside_any_object():
    from reasonrl.gr2_plugins.constraints import SIDTrie, constraint_opened

    tok = tokenizer_with_sids()
    rollout_rule = SIDTrie().for_example(tok, {"candidates": SIDS, "prompt": " ".join(HISTORY)})
    feed(rollout_rule, tok, 'fits best", "recommendations')
    # nothing is forced: RL must see this answer fail rather than learn that the decoder fixes it
    assert not rollout_rule.in_answer and rollout_rule.allowed() == Excluding((tok.eos_token_id,))
    text, _ = decode_with(rollout_rule, tok, "", budget=40)
    assert not constraint_opened(text)
    # the model may still open a proper object itself, and then its list is constrained as usual
    feed(rollout_rule, tok, ' {"recommendations')
    assert rollout_rule.in_answer and rollout_rule.literal == '": ["'
