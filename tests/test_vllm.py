"""The vllm rollout engine honours the same contract as hf (runs only where vLLM and a GPU exist)."""

import pytest
import torch

from reasonrl.core.errors import ReasonRLError
from reasonrl.plugins.models import TinyModelParams
from reasonrl.plugins.vllm_engine import VLLMParams, VLLMRolloutEngine


def test_missing_vllm_gives_an_actionable_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)
    from reasonrl.plugins.models import tiny_model

    model, tokenizer = tiny_model(TinyModelParams(hidden_size=32))
    with pytest.raises(ReasonRLError, match=r"pip install 'reasonrl\[vllm\]'"):
        VLLMRolloutEngine(VLLMParams()).generate(model, tokenizer, ["12>"], 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM needs a CUDA GPU")
def test_vllm_logprobs_match_hf_rescoring_after_a_weight_push():
    pytest.importorskip("vllm")
    from reasonrl.plugins.models import tiny_model
    from reasonrl.plugins.rollout import completion_logprobs

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
        rescored, _ = completion_logprobs(model, [p.cuda() for p in out.prompt_ids], out.completion_ids.cuda(), 3,
                                          tokenizer.pad_token_id)
    assert torch.allclose(rescored.cpu() * out.mask, out.logprobs * out.mask, atol=2e-2)
