import json
import sys

import pytest
import torch

from reasonrl.core.config import resolve_config
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.pipeline import run_pipeline


def tiny_rl(tmp_path, **extra):
    stage = {"stage": "rl", "id": "rl", "model": {"source": "tiny", "tiny": {"hidden_size": 32}},
             "dataset": "sort_digits", "rewards": ["sort_accuracy"], "rollout": {"name": "hf", "params": {"max_new_tokens": 5}},
             "steps": 2, "prompts_per_step": 2, "group_size": 4, "progress": False, **extra.pop("stage", {})}
    return resolve_config({"run_name": "t", "output_dir": str(tmp_path), "stages": [stage], **extra})


def test_tensorboard_and_jsonl_trackers_write_every_step(tmp_path, reasonrl_registry):
    run_pipeline(tiny_rl(tmp_path, trackers=["jsonl", "tensorboard"]), echo=lambda m: None)
    rows = (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "t" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("rl/reward/mean")] == [1, 2]


def test_missing_optional_tracker_says_what_to_install(tmp_path, reasonrl_registry, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ReasonRLError, match="pip install wandb"):
        run_pipeline(tiny_rl(tmp_path, trackers=["wandb"]), echo=lambda m: None)


def test_lora_training_merges_adapters_on_save(tmp_path, reasonrl_registry):
    from transformers import AutoModelForCausalLM

    stage = {"stage": "sft", "id": "rl", "model": {"source": "tiny", "tiny": {"hidden_size": 32},
                                                   "lora": {"r": 4, "alpha": 8}},
             "dataset": {"name": "sort_digits", "params": {"train_size": 16}}, "lr": 0.01, "progress": False}
    run_pipeline(resolve_config({"run_name": "t", "output_dir": str(tmp_path), "stages": [stage]}), echo=lambda m: None)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "t" / "rl" / "model")
    names = [n for n, _ in saved.named_parameters()]
    assert not any("lora" in n for n in names)  # merged into plain weights
    from reasonrl.plugins.engine.models import TinyModelParams, tiny_model

    base, _ = tiny_model(TinyModelParams(hidden_size=32), seed=0)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(saved.state_dict()[q], base.state_dict()[q])  # the adapters learned something
    embed = "model.embed_tokens.weight"
    assert torch.equal(saved.state_dict()[embed], base.state_dict()[embed])  # base weights frozen


def test_wandb_follows_its_own_mode_setting(tmp_path, monkeypatch):
    import sys
    import types

    from reasonrl.plugins.tracking.trackers import WandbParams, WandbTracker

    calls = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls.append(kwargs) or types.SimpleNamespace(log=lambda *a, **k: None,
                                                                               finish=lambda: None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    tracker = WandbTracker(WandbParams())
    tracker.open(tmp_path)
    tracker.close()
    assert calls[0]["mode"] is None  # WANDB_MODE and W&B's defaults decide, not reasonrl
    WandbTracker(WandbParams(mode="offline")).open(tmp_path)
    assert calls[1]["mode"] == "offline"


def test_every_tracker_records_the_resolved_config(tmp_path, reasonrl_registry, monkeypatch):
    import types

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    updates, params = [], []
    run = types.SimpleNamespace(log=lambda *a, **k: None, finish=lambda: None,
                                config=types.SimpleNamespace(update=lambda d, **k: updates.append(d)))
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **k: run))
    mlflow = types.SimpleNamespace(set_tracking_uri=lambda *_: None, set_experiment=lambda *_: None,
                                   start_run=lambda **_: None, end_run=lambda: None, log_metrics=lambda *a, **k: None,
                                   log_params=params.append)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    config = tiny_rl(tmp_path, trackers=["jsonl", "tensorboard", "wandb", "mlflow"], stage={"lr": 3e-4})
    run_pipeline(config, echo=lambda m: None)

    saved = json.loads((tmp_path / "t" / "metrics.config.json").read_text())
    assert saved["stages"][0]["lr"] == 3e-4 and saved["run_name"] == "t"
    assert updates[0]["stages"][0]["group_size"] == 4
    assert params[0]["stages.rl.lr"] == "0.0003" and params[0]["stages.rl.rollout.params.max_new_tokens"] == "5"
    events = EventAccumulator(str(tmp_path / "t" / "tensorboard"))
    events.Reload()
    hparams = {}
    for tag, blob in events.PluginTagToContent("hparams").items():
        data = HParamsPluginData.FromString(blob)
        hparams.update({k: v for k, v in data.session_start_info.hparams.items()})
    assert hparams["stages.rl.lr"].number_value == pytest.approx(3e-4)
    assert hparams["stages.rl.optimizer.name"].string_value == "dapo"


def test_lora_trains_the_embedding_rows_of_listed_tokens_and_saves_them_merged(tmp_path, reasonrl_registry):
    from safetensors.torch import load_file

    from reasonrl.core.config import resolve_config
    from reasonrl.core.pipeline import run_pipeline
    from reasonrl.plugins.engine.models import ModelSpec, TinyModelParams, load_policy

    run = tmp_path / "runs" / "tok"
    run.mkdir(parents=True)
    (run / "new_tokens.txt").write_text("<s_a_1>\n<s_a_2>\n")
    tiny = {"hidden_size": 32, "intermediate_size": 64}
    stages = [{"stage": "sft", "id": "sft", "dataset": {"name": "sort_digits", "params": {"train_size": 16}},
               "model": {"source": "tiny", "tiny": tiny, "add_tokens": "new_tokens.txt",
                         "lora": {"r": 4, "alpha": 8, "trainable_tokens": "new_tokens.txt"}},
               "batch_size": 4, "epochs": 1, "lr": 5e-2, "progress": False}]
    run_pipeline(resolve_config({"run_name": "tok", "output_dir": str(tmp_path / "runs"), "trackers": [],
                                 "stages": stages}), echo=lambda m: None)
    start, tokenizer = load_policy(ModelSpec(source="tiny", tiny=TinyModelParams(**tiny), add_tokens="new_tokens.txt"),
                                   run)
    new_ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<s_a_1>", "<s_a_2>")]
    before = start.state_dict()["model.embed_tokens.weight"]
    after = load_file(str(run / "sft" / "model" / "model.safetensors"))["model.embed_tokens.weight"]
    others = [i for i in range(before.shape[0]) if i not in new_ids]
    # the sorting data never shows the new tokens, but the output layer is tied: their logits get gradients
    assert not torch.allclose(after[new_ids], before[new_ids])
    assert torch.equal(after[others], before[others])  # the rest of the vocabulary is frozen


def test_trainable_tokens_must_exist(tmp_path):
    from reasonrl.core.errors import ReasonRLError
    from reasonrl.plugins.engine.models import LoraParams, ModelSpec, load_policy

    (tmp_path / "t.txt").write_text("<never_added>\n")
    with pytest.raises(ReasonRLError, match=r"1 tokens of .*t.txt are not in the tokenizer.*model.add_tokens"):
        load_policy(ModelSpec(source="tiny", lora=LoraParams(trainable_tokens="t.txt")), tmp_path)
