"""Reruns rerun, the saved config is what ran, caches notice damage, bad input gets a clear error.

Each test here reproduces a case of the "what happens when" table in docs/guides/runs.md.
"""

import json
import types

import pytest
import torch
import yaml
from pydantic import BaseModel
from safetensors.torch import load_file

from reasonrl import hookimpl
from reasonrl.core.config import ConfigError, dump_config, load_config, resolve_config
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.pipeline import MARKER, StaleStageError, run_pipeline
from reasonrl.plugins.engine.rl import RLStage
from reasonrl.plugins.engine.supervised import SFTStage
from reasonrl.plugins.tracking.trackers import read_metrics

QUIET = dict(echo=lambda m: None)
TINY = {"source": "tiny", "tiny": {"hidden_size": 32, "intermediate_size": 64}}


def sort_run(run_dir, rl_steps=3, overrides=(), **rl_extra):
    """sft -> rl on the sort task, small enough for seconds on CPU."""
    sft = {"stage": "sft", "id": "sft", "model": TINY, "dataset": {"name": "sort_digits", "params": {"train_size": 16}},
           "batch_size": 8, "epochs": 2, "checkpoint_every": 1, "progress": False}
    rl = {"stage": "rl", "id": "rl", "model": {"source": "stage", "stage": "sft"}, "dataset": "sort_digits",
          "rewards": ["sort_accuracy"], "rollout": {"name": "hf", "params": {"max_new_tokens": 5}},
          "steps": rl_steps, "prompts_per_step": 2, "group_size": 4, "lr": 1e-3, "checkpoint_every": 1,
          "progress": False, **rl_extra}
    return resolve_config({"run_name": "r", "output_dir": str(run_dir), "stages": [sft, rl]}, list(overrides))


def rl_weights(run_dir):
    return load_file(str(run_dir / "r" / "rl" / "model" / "model.safetensors"))


def dies_at(monkeypatch, stage_class, method, at_step):
    original = getattr(stage_class, method)

    def dying(self, step, *args):
        if step == at_step:
            raise KeyboardInterrupt
        return original(self, step, *args)

    monkeypatch.setattr(stage_class, method, dying)
    return original


# ---------------------------------------------------------------- wrong results without a word


def test_force_reruns_from_scratch_instead_of_resuming(tmp_path, reasonrl_registry):
    run_pipeline(sort_run(tmp_path), **QUIET)
    said = []
    outputs = run_pipeline(sort_run(tmp_path, overrides=["stages[1].optimizer.name=grpo"]), force=["rl"],
                           echo=said.append)
    assert not any("resuming" in line for line in said)
    assert outputs["rl"]["steps"] == 3  # a fresh history, not the old one
    history = json.loads((tmp_path / "r" / "rl" / "history.json").read_text())
    assert len(history) == 3
    # the weights are what grpo makes from the sft model, not dapo's weights trained further
    run_pipeline(sort_run(tmp_path / "ref", overrides=["stages[1].optimizer.name=grpo"]), **QUIET)
    a, b = rl_weights(tmp_path), rl_weights(tmp_path / "ref")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_force_reruns_the_stages_that_use_the_forced_one(tmp_path, reasonrl_registry):
    run_pipeline(sort_run(tmp_path), **QUIET)
    said = []
    run_pipeline(sort_run(tmp_path), force=["sft"], echo=said.append)
    assert any(line.startswith("[2/2] rl: starting over") for line in said)
    sft_marker = json.loads((tmp_path / "r" / "sft" / MARKER).read_text())
    rl_marker = json.loads((tmp_path / "r" / "rl" / MARKER).read_text())
    assert rl_marker["attempt"] == sft_marker["attempt"] == 2


def test_config_edit_on_a_finished_run_stops_before_any_work(tmp_path, reasonrl_registry):
    run_pipeline(sort_run(tmp_path), **QUIET)
    before = (tmp_path / "r" / "config.resolved.yaml").read_text()
    edited = sort_run(tmp_path, overrides=["stages[1].lr=0.5", "stages[0].epochs=1"])
    with pytest.raises(StaleStageError) as err:
        run_pipeline(edited, **QUIET)
    message = str(err.value)
    assert "['sft', 'rl']" in message and "--force sft --force rl" in message and "run_name" in message
    assert (tmp_path / "r" / "config.resolved.yaml").read_text() == before  # still describes what ran


def test_config_edit_after_a_kill_does_not_resume_the_old_settings(tmp_path, monkeypatch, reasonrl_registry):
    dies_at(monkeypatch, RLStage, "train_step", 2)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(sort_run(tmp_path), **QUIET)
    monkeypatch.undo()
    with pytest.raises(ReasonRLError, match=r"checkpoint .* was written under another config.*--force rl"):
        run_pipeline(sort_run(tmp_path, overrides=["stages[1].lr=0.5"]), **QUIET)
    steps = []
    original = RLStage.train_step
    monkeypatch.setattr(RLStage, "train_step", lambda self, step: steps.append(step) or original(self, step))
    outputs = run_pipeline(sort_run(tmp_path), **QUIET)  # the same config still resumes
    assert steps == [2] and outputs["rl"]["steps"] == 3  # from the step-2 checkpoint, not from scratch


def test_environment_values_are_masked_at_their_own_path_only(reasonrl_registry, monkeypatch):
    monkeypatch.setenv("SEED", "1")
    data = {"run_name": "t", "seed": "${SEED}",
            "stages": [{"stage": "sft", "dataset": "sort_digits", "batch_size": 16, "max_grad_norm": 1.0}]}
    saved = yaml.safe_load(dump_config(resolve_config(data, registry=reasonrl_registry)))
    assert saved["seed"] == "${SEED}"
    assert saved["stages"][0]["batch_size"] == 16 and saved["stages"][0]["max_grad_norm"] == 1.0


# ---------------------------------------------------------------- lost work


def test_unwritable_stage_folder_fails_before_any_work(tmp_path, reasonrl_registry):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "rl").write_text("a file where the stage folder goes")
    with pytest.raises(ReasonRLError, match=r"output folder .*rl is not writable.*Nothing was run"):
        run_pipeline(sort_run(tmp_path), **QUIET)
    assert not (tmp_path / "r" / "sft").exists()


def rl_only(run_dir):
    """The rl stage alone, from a fresh tiny model: no input stage, so its folder is not wiped."""
    rl = sort_run(run_dir).raw["stages"][1]
    return resolve_config({"run_name": "r", "output_dir": str(run_dir), "stages": [{**rl, "model": TINY}]})


def test_failed_final_save_keeps_the_trained_weights_as_a_checkpoint(tmp_path, monkeypatch, reasonrl_registry):
    (tmp_path / "r" / "rl").mkdir(parents=True)
    blocker = tmp_path / "r" / "rl" / "model"
    blocker.write_text("a file where the model folder goes")
    with pytest.raises(ReasonRLError, match="saving the model .* failed.*checkpoint of step 3"):
        run_pipeline(rl_only(tmp_path), **QUIET)
    state = json.loads((tmp_path / "r" / "rl" / "checkpoint" / "trainer_state.json").read_text())["state"]
    assert state["step"] == 3 and len(state["history"]) == 3
    blocker.unlink()
    steps = []
    original = RLStage.train_step
    monkeypatch.setattr(RLStage, "train_step", lambda self, step: steps.append(step) or original(self, step))
    outputs = run_pipeline(rl_only(tmp_path), **QUIET)
    assert outputs["rl"]["steps"] == 3 and steps == []  # resumed at the end: it only saved
    run_pipeline(rl_only(tmp_path / "ref"), **QUIET)
    a, b = rl_weights(tmp_path), rl_weights(tmp_path / "ref")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_full_disk_in_safetensors_keeps_the_trained_weights_as_a_checkpoint(tmp_path, monkeypatch,
                                                                              reasonrl_registry):
    from safetensors import SafetensorError

    import reasonrl.plugins.engine.saving as saving

    def disk_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: No space left on device (os error 28)")

    monkeypatch.setattr(saving, "save_policy", disk_full)
    with pytest.raises(ReasonRLError, match="No space left on device.*checkpoint of step 3"):
        run_pipeline(rl_only(tmp_path), **QUIET)
    state = json.loads((tmp_path / "r" / "rl" / "checkpoint" / "trainer_state.json").read_text())["state"]
    assert state["step"] == 3


def test_a_metrics_row_cut_off_mid_write_is_skipped_and_the_next_attempt_starts_a_new_line(tmp_path,
                                                                                         reasonrl_registry):
    run_pipeline(sort_run(tmp_path), **QUIET)
    path = tmp_path / "r" / "metrics.jsonl"
    before = read_metrics(path)
    with open(path, "a") as handle:
        handle.write('{"step": 9, "time": 17')  # the disk filled mid-row
    run_pipeline(sort_run(tmp_path, overrides=["stages[1].lr=0.002"]), force=["rl"], **QUIET)
    with pytest.warns(UserWarning, match="skipped 1 row"):
        after = read_metrics(path)
    assert [r["step"] for r in after if "rl/loss" in r] == [1, 2, 3]
    assert [r["attempt"] for r in after if "rl/loss" in r] == [2, 2, 2]
    assert len([r for r in after if "sft/loss" in r]) == len([r for r in before if "sft/loss" in r])


def test_resumed_runs_mark_their_metric_rows_and_read_back_once_per_step(tmp_path, monkeypatch, reasonrl_registry):
    original = dies_at(monkeypatch, RLStage, "maybe_checkpoint", 3)  # step 3 is logged, its checkpoint is not
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(sort_run(tmp_path, rl_steps=4), **QUIET)
    monkeypatch.setattr(RLStage, "maybe_checkpoint", original)
    run_pipeline(sort_run(tmp_path, rl_steps=4), **QUIET)
    path = tmp_path / "r" / "metrics.jsonl"
    raw = [json.loads(line) for line in path.read_text().splitlines() if "rl/loss" in line]
    assert [(r["step"], r["attempt"]) for r in raw] == [(1, 1), (2, 1), (3, 1), (3, 2), (4, 2)]
    kept = [r for r in read_metrics(path) if "rl/loss" in r]
    assert [(r["step"], r["attempt"]) for r in kept] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert any(r.get("rl/resumed_from_step") == 2.0 and r["attempt"] == 2 for r in read_metrics(path))


def test_loss_first_survives_a_resume(tmp_path, monkeypatch, reasonrl_registry):
    whole = run_pipeline(sort_run(tmp_path / "a"), **QUIET)
    original = SFTStage.train_on
    calls = []

    def dies_on_third_batch(self, batch):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(SFTStage, "train_on", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(sort_run(tmp_path / "b"), **QUIET)
    monkeypatch.undo()
    resumed = run_pipeline(sort_run(tmp_path / "b"), **QUIET)
    assert resumed["sft"]["loss_first"] == whole["sft"]["loss_first"]
    assert resumed["sft"]["loss_last"] == whole["sft"]["loss_last"]


def test_versions_record_the_thread_settings(tmp_path, reasonrl_registry):
    run_pipeline(sort_run(tmp_path, rl_steps=1), **QUIET)
    threads = json.loads((tmp_path / "r" / "versions.json").read_text())["threads"]
    assert threads["torch_threads"] == torch.get_num_threads() and "OMP_NUM_THREADS" in threads


# ---------------------------------------------------------------- clear errors


def jsonl_run(tmp_path, rows, stage="rl"):
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = {"name": "jsonl", "params": {"files": {"train": str(tmp_path / "data.jsonl")}}}
    entry = {"stage": stage, "id": stage, "model": TINY, "dataset": dataset, "progress": False}
    if stage == "rl":
        entry.update(rewards=["sort_accuracy"], steps=1)
    return resolve_config({"run_name": "r", "output_dir": str(tmp_path / "runs"), "stages": [entry]})


@pytest.mark.parametrize("stage", ["rl", "sft"])
def test_row_without_the_prompt_field_names_the_row(tmp_path, stage, reasonrl_registry):
    rows = [{"prompt": "12", "completion": "12", "answer": "12"}, {"text": "no prompt here"}]
    with pytest.raises(ReasonRLError, match=r"row 1 of split 'train' .* has no field 'prompt'; its fields are \['text'\]"):
        run_pipeline(jsonl_run(tmp_path, rows, stage), **QUIET)


@pytest.mark.parametrize("stage", ["rl", "sft"])
def test_empty_split_is_a_clear_error(tmp_path, stage, reasonrl_registry):
    with pytest.raises(ReasonRLError, match=r"split 'train' of dataset 'jsonl' is empty"):
        run_pipeline(jsonl_run(tmp_path, [], stage), **QUIET)


@pytest.mark.parametrize("stage", ["rl", "sft"])
def test_one_huge_row_is_named_before_it_is_read_whole(tmp_path, stage, reasonrl_registry, monkeypatch):
    rows = [{"prompt": "12", "completion": "12", "answer": "12"}, {"prompt": "9" * 9_000_000, "completion": "1"}]
    config = jsonl_run(tmp_path, rows, stage)
    with pytest.raises(ReasonRLError, match=r"data.jsonl:2: a row longer than max_row_bytes \(8000000 bytes\)"):
        run_pipeline(config, **QUIET)


def test_a_row_too_long_for_the_model_is_named_before_anything_is_tokenized(tmp_path, reasonrl_registry,
                                                                          monkeypatch):
    rows = [{"prompt": "12", "completion": "12"}, {"prompt": "3" * 600_000, "completion": "3"}]
    encoded = []
    monkeypatch.setattr(SFTStage, "encode", lambda self, example: encoded.append(example) or ([1], [1.0]))
    with pytest.raises(ReasonRLError, match=r"row 1 of split 'train' has 600001 characters, far more than the "
                                            r"model's context"):
        run_pipeline(jsonl_run(tmp_path, rows, "sft"), **QUIET)
    assert encoded == []


def test_invalid_yaml_in_set_or_environment(reasonrl_registry, monkeypatch):
    data = {"run_name": "t", "stages": [{"stage": "sft", "dataset": "sort_digits"}]}
    with pytest.raises(ConfigError, match=r"--set 'stages\[0\].lr=\[1,': '\[1,' is not valid YAML.*quote it"):
        resolve_config(data, ["stages[0].lr=[1,"], reasonrl_registry)
    monkeypatch.setenv("BAD_LR", "{oops")
    data["stages"][0]["lr"] = "${BAD_LR}"
    with pytest.raises(ConfigError, match=r"stages\[0\].lr \(from \$\{BAD_LR\}\): '\{oops' is not valid YAML"):
        resolve_config(data, [], reasonrl_registry)


def test_config_file_that_is_not_utf8(tmp_path, reasonrl_registry):
    path = tmp_path / "c.yaml"
    path.write_bytes("run_name: caf".encode() + b"\xe9\nstages: []\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text: byte 13 \(line 1\) is b'\\xe9'"):
        load_config(path, registry=reasonrl_registry)


def test_duplicate_yaml_keys_are_refused(tmp_path, reasonrl_registry):
    path = tmp_path / "c.yaml"
    path.write_text("run_name: a\nseed: 1\nstages:\n  - stage: sft\nseed: 2\n")
    with pytest.raises(ConfigError, match=r"key 'seed' appears twice \(lines 2 and 5\)"):
        load_config(path, registry=reasonrl_registry)


@pytest.mark.parametrize("field,value", [("run_name", ".."), ("run_name", "../../x"), ("id", ".."),
                                         ("id", "../x"), ("id", "/tmp/x")])
def test_names_cannot_leave_the_run_folder(field, value, reasonrl_registry):
    stage = {"stage": "sft", "dataset": "sort_digits"}
    data = {"run_name": "t", "stages": [stage]}
    (stage if field == "id" else data)[field] = value
    with pytest.raises(ConfigError, match=field):
        resolve_config(data, registry=reasonrl_registry)


class FlakyParams(BaseModel):
    pass


class FailsOnOddDigits:
    """Raises on completions holding an odd digit; 1.0 otherwise."""

    def __init__(self, params):
        pass

    def __call__(self, prompts, completions, examples):
        return [1 / 0 if any(c in "13579" for c in text) else {"flaky": 1.0} for text in completions]


def test_invalid_samples_are_counted_in_the_rl_metrics(tmp_path, register_plugin):
    plugin = types.ModuleType("flaky_pack")

    @hookimpl
    def register_reward_functions(register):
        register("flaky", FailsOnOddDigits, params=FlakyParams)

    plugin.register_reward_functions = register_reward_functions
    register_plugin(plugin, name="flaky_pack")
    stage = {"stage": "rl", "id": "rl", "model": TINY, "dataset": "sort_digits", "rewards": ["flaky"],
             "on_reward_error": "invalid", "invalid_reward": -1.0, "steps": 2, "prompts_per_step": 4, "group_size": 4,
             "optimizer": "grpo", "rollout": {"name": "hf", "params": {"max_new_tokens": 5}}, "progress": False}
    config = resolve_config({"run_name": "r", "output_dir": str(tmp_path), "stages": [stage]})
    run_pipeline(config, **QUIET)
    history = json.loads((tmp_path / "r" / "rl" / "history.json").read_text())
    for step in history:
        invalid = step["reward/invalid"]
        assert 0 < invalid < 1  # an untrained char model writes odd digits in some samples only
        # the mean reward counts invalid samples at -1 and valid ones at 1
        assert step["reward/mean"] == pytest.approx(invalid * -1.0 + (1 - invalid) * 1.0)
