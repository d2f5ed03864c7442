"""``reasonrl export``: a loadable transformers folder with a model card; Hub push through a mocked HfApi."""

import json
from unittest import mock

import pytest
import torch

from reasonrl.core.cli import main
from reasonrl.core.config import resolve_config
from reasonrl.core.pipeline import run_pipeline

ASCII = "".join(chr(c) for c in range(32, 127))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    (folder / "policy.md").write_text("---\nlabels: [fine, rude]\n---\nRude replies insult the reader.\n")
    rows = [f"thanks a lot {i},fine" for i in range(10)] + [f"go away fool {i},rude" for i in range(10)]
    (folder / "replies.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    data = {"name": "moderation_table", "params": {"data_files": str(folder / "replies.csv"),
                                                   "policy": str(folder / "policy.md"), "max_chars": 200}}
    tiny = {"source": "tiny", "tiny": {"alphabet": ASCII, "max_positions": 2048}}
    stages = [
        {"stage": "sft", "id": "sft", "model": tiny, "dataset": data, "batch_size": 4, "epochs": 1, "lr": 1e-3,
         "progress": False},
        {"stage": "rl", "id": "rl", "model": {"source": "stage", "stage": "sft"}, "dataset": data,
         "rewards": ["label_accuracy", "verdict_format"], "rollout": {"name": "hf", "params": {"max_new_tokens": 4}},
         "steps": 1, "prompts_per_step": 2, "group_size": 2, "progress": False,
         "optimizer": {"name": "dapo", "params": {"dynamic_sampling": False}}},
        {"stage": "moderation_evaluate", "id": "evaluate", "dataset": data, "progress": False,
         "sampling": {"max_new_tokens": 4},
         "variants": [{"name": "after RL", "stage": "rl", "chat_template": False},
                      {"name": "untrained", "model": tiny, "chat_template": False}]}]
    config = resolve_config({"run_name": "mod", "output_dir": str(folder / "runs"), "stages": stages})
    run_pipeline(config, echo=lambda *_: None)
    return config.run_dir


def test_export_writes_a_loadable_folder_with_a_model_card(run_dir, tmp_path, reasonrl_registry, capsys):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "exported"
    assert main(["export", str(run_dir / "rl"), "--to", str(out)]) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    trained = AutoModelForCausalLM.from_pretrained(run_dir / "rl" / "model")
    exported, original = model.state_dict(), trained.state_dict()
    assert exported.keys() == original.keys()  # a missing or extra tensor fails here, not silently
    for name in original:
        assert torch.equal(exported[name], original[name]), name
    assert AutoTokenizer.from_pretrained(out)("go away")["input_ids"]

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and set(card.data.tags) == {"reasonrl", "dapo"}
    assert card.data.base_model is None  # a tiny random model has no pretrained base
    report = json.loads((run_dir / "evaluate" / "report.json").read_text())["rows"]["after RL"]
    assert f"{report['accuracy']:.4f}" in card.text and "| evaluate: after RL |" in card.text
    assert "| evaluate: untrained (reference) |" in card.text
    assert "`sft` (sft)" in card.text and "`rl` (rl): optimizer=dapo, rewards=[label_accuracy, verdict_format]" in card.text
    assert "moderation_table`: your data; licence: state your data's licence" in card.text
    assert (out / "reasonrl_config.yaml").read_text() == (run_dir / "config.resolved.yaml").read_text()
    assert "reasonrl run reasonrl_config.yaml" in card.text


def test_export_refuses_what_is_not_a_trained_stage_or_a_full_target(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir / "evaluate"), "--to", str(tmp_path / "x")]) == 2
    assert "holds no trained model" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert main(["export", str(run_dir / "sft"), "--to", str(tmp_path / "full")]) == 2
    assert "--force" in capsys.readouterr().err and (tmp_path / "full" / "keep.txt").exists()


def test_push_to_hub_goes_through_huggingface_hub(run_dir, tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may leave this machine
    created, uploaded = mock.Mock(return_value="https://hub.example/me/mod-rl"), mock.Mock()
    monkeypatch.setattr(HfApi, "create_repo", created)
    monkeypatch.setattr(HfApi, "upload_folder", uploaded)
    out = tmp_path / "pushed"
    assert main(["export", str(run_dir / "rl"), "--to", str(out), "--push-to-hub", "me/mod-rl", "--private"]) == 0
    created.assert_called_once_with("me/mod-rl", private=True, exist_ok=True)
    kwargs = uploaded.call_args.kwargs
    assert kwargs["repo_id"] == "me/mod-rl" and kwargs["folder_path"] == str(out)
    assert "pushed to https://hub.example/me/mod-rl" in capsys.readouterr().out


def test_a_third_party_dataset_and_a_pack_stage_name_their_own_licence_in_the_card(tmp_path, register_plugin):
    """export asks the components: a plugin's dataset ``card``, a stage's ``data_cards``."""
    import types

    import yaml
    from huggingface_hub import ModelCard

    from reasonrl import hookimpl
    from reasonrl.plugins.engine.models import TinyModelParams, save_policy, tiny_model

    class Reviews:
        card = ("Acme product reviews, 2024", "CC-BY-4.0")

        def __init__(self, params):
            pass

    plugin = types.ModuleType("acme_data")
    plugin.register_datasets = hookimpl(lambda register: register("acme_reviews", Reviews))
    register_plugin(plugin, name="acme_data")
    run = tmp_path / "run"
    save_policy(*tiny_model(TinyModelParams(alphabet=ASCII)), run / "sft" / "model")
    stages = [{"stage": "gr2_prepare", "id": "prepare", "dataset": "movielens_1m"},
              {"stage": "sft", "id": "sft", "dataset": {"name": "acme_reviews"}, "model": {"source": "tiny"}}]
    (run / "config.resolved.yaml").write_text(yaml.safe_dump({"run_name": "run", "stages": stages}))
    assert main(["export", str(run / "sft"), "--to", str(tmp_path / "out")]) == 0
    card = ModelCard.load(tmp_path / "out" / "README.md").text
    assert "- `acme_reviews`: Acme product reviews, 2024; licence: CC-BY-4.0" in card
    assert "- `movielens_1m`: MovieLens (GroupLens); licence: research use only" in card


def test_export_holds_no_pack_or_dataset_name():
    from pathlib import Path

    source = (Path(__file__).parents[1] / "plugins" / "serving" / "export.py").read_text()
    for name in ("movielens", "gr2", "moderation", "spam_email", "harmful_response", "risk_area",
                 "prompt_injection", "sort_digits", "SmolLM2"):
        assert name not in source, name
