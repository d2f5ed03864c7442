"""Tensors are created on the device of the model that consumes them.

There is no second device on a CPU machine, so a misplaced tensor cannot fail here the way
it fails on a GPU. Instead, every tensor factory call (``torch.zeros``, ``torch.tensor``,
...) made by reasonrl's own code while the stages run is recorded, and each must name its
device. On a GPU, a call without one creates a CPU tensor next to CUDA weights, and the
first forward pass fails.
"""

import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import reasonrl
from reasonrl.core.config import resolve_config
from reasonrl.core.pipeline import run_pipeline

PACKAGE = Path(reasonrl.__file__).parent
OWN_CODE = tuple(str(PACKAGE / folder) + "/" for folder in ("core", "plugins", "gr2_plugins", "moderation_plugins"))
FACTORIES = {torch.tensor, torch.zeros, torch.ones, torch.full, torch.empty, torch.arange, torch.rand, torch.randn,
             torch.randint, torch.randperm}


class ImplicitDeviceRecorder(TorchFunctionMode):
    """Records ``file:line`` of factory calls in reasonrl code that leave the device to the default."""

    def __init__(self):
        super().__init__()
        self.calls: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(OWN_CODE):
                self.calls.add(f"{Path(caller.f_code.co_filename).relative_to(PACKAGE)}:{caller.f_lineno}")
        return func(*args, **kwargs)


def test_the_recorder_sees_a_factory_call_without_device():
    from reasonrl.plugins.engine.rollout import left_pad

    # code compiled under a file name inside the package counts as reasonrl's own
    own_code = compile("torch.zeros(2)\ntorch.ones(2, device='cpu')\n", str(PACKAGE / "plugins" / "example.py"), "exec")
    recorder = ImplicitDeviceRecorder()
    with recorder:
        left_pad([torch.tensor([1, 2], device="cpu")], 0)  # derives its device: not recorded
        torch.zeros(2)  # this test file is not reasonrl code: not recorded
        exec(own_code, {"torch": torch})
    assert recorder.calls == {"plugins/example.py:1"}


@pytest.mark.parametrize("optimizer", ["dapo", "ppo", {"name": "grpo", "params": {"beta": 0.1}}])
def test_training_stages_create_every_tensor_on_an_explicit_device(tmp_path, optimizer, reasonrl_registry):
    tiny = {"source": "tiny", "tiny": {"hidden_size": 32, "intermediate_size": 64}}
    stages = [
        {"stage": "sft", "id": "sft", "model": tiny, "dataset": {"name": "sort_digits", "params": {"train_size": 8}},
         "batch_size": 4, "epochs": 1, "progress": False},
        {"stage": "rl", "id": "rl", "model": {"source": "stage", "stage": "sft"}, "dataset": "sort_digits",
         "rewards": ["sort_accuracy"], "optimizer": optimizer, "rollout": {"name": "hf", "params": {"max_new_tokens": 4}},
         "steps": 1, "prompts_per_step": 2, "group_size": 2, "progress": False},
    ]
    config = resolve_config({"run_name": "r", "output_dir": str(tmp_path), "stages": stages})
    recorder = ImplicitDeviceRecorder()
    with recorder:
        run_pipeline(config, echo=lambda m: None)
    assert sorted(recorder.calls) == []


def test_inference_and_judging_create_every_tensor_on_an_explicit_device(reasonrl_registry):
    from reasonrl.moderation_plugins.judges import HFJudge, HFJudgeParams
    from reasonrl.plugins.engine.generation import generate_texts
    from reasonrl.plugins.engine.manifest import DecodeSettings, decode
    from reasonrl.plugins.engine.models import ModelSpec, TinyModelParams, load_policy
    from reasonrl.plugins.engine.rollout import SamplingParams

    model, tokenizer = load_policy(ModelSpec(source="tiny", tiny=TinyModelParams(hidden_size=32, intermediate_size=64)))
    recorder = ImplicitDeviceRecorder()
    with recorder:
        decode(model, tokenizer, ["12"], DecodeSettings(stage="x", max_new_tokens=3))
        generate_texts(model, tokenizer, ["12", "3"], SamplingParams(max_new_tokens=3), samples=2, progress=False)
        judge = HFJudge(HFJudgeParams(model=ModelSpec(source="tiny"), chat_template=False))
        judge.probability_yes(["a? ", "b? "])
    assert sorted(recorder.calls) == []
