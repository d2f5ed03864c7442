import pytest
import yaml

from reasonrl.core.config import ConfigError, dump_config, load_config, resolve_config


def rl_stage(**extra):
    return {"stage": "rl", "id": "rl", "dataset": "sort_digits", "rewards": ["sort_accuracy"], **extra}


def base(**extra):
    return {"run_name": "t", "stages": [{"stage": "sft", "dataset": "sort_digits"}, rl_stage()], **extra}


def problems(data, overrides=(), registry=None):
    with pytest.raises(ConfigError) as err:
        resolve_config(data, list(overrides), registry)
    return err.value.problems


def test_valid_config_resolves_components_and_defaults(reasonrl_registry):
    config = resolve_config(base(), registry=reasonrl_registry)
    rl = config.stages[1]
    assert (rl.id, rl.name, rl.params.optimizer.name, rl.params.group_size) == ("rl", "rl", "dapo", 8)
    assert config.stages[0].id == "sft"  # id defaults to the stage name


def test_nested_component_param_error_names_the_path(reasonrl_registry):
    data = base()
    data["stages"][1]["optimizer"] = {"name": "dapo", "params": {"epsilon_high": "wide"}}
    (problem,) = problems(data, registry=reasonrl_registry)
    assert problem.startswith("stages[1].optimizer.params.epsilon_high:")
    assert "'wide'" in problem and "number" in problem


def test_unknown_component_name_suggests_the_closest(reasonrl_registry):
    data = base()
    data["stages"][1]["rewards"] = ["sort_acuracy"]
    (problem,) = problems(data, registry=reasonrl_registry)
    assert problem.startswith("stages[1].rewards[0].name:") and "Did you mean 'sort_accuracy'" in problem


def test_unknown_stage_and_unknown_stage_key(reasonrl_registry):
    data = base()
    data["stages"][0] = {"stage": "sfft"}
    data["stages"][1]["stpes"] = 3
    found = problems(data, registry=reasonrl_registry)
    assert any(p.startswith("stages[0].stage:") and "'sft'" in p for p in found)
    assert any(p.startswith("stages[1].stpes:") for p in found)


def test_duplicate_stage_ids(reasonrl_registry):
    data = base()
    data["stages"][0]["id"] = "rl"
    (problem,) = problems(data, registry=reasonrl_registry)
    assert problem.startswith("stages[1].id:") and "stages[0]" in problem


def test_set_override_is_type_checked(reasonrl_registry):
    overrides = ["stages[1].steps=7", "stages.1.rollout.name=hf", "stages.1.rollout.params.temperature=0.5"]
    config = resolve_config(base(), overrides, reasonrl_registry)
    assert config.stages[1].params.steps == 7
    assert config.stages[1].params.rollout.params["temperature"] == 0.5
    (problem,) = problems(base(), ["stages[1].steps=many"], reasonrl_registry)
    assert problem.startswith("stages[1].steps:") and "'many'" in problem


def test_set_override_on_missing_parent_fails(reasonrl_registry):
    with pytest.raises(ConfigError, match=r"stages\[5\] does not exist"):
        resolve_config(base(), ["stages[5].steps=1"], reasonrl_registry)
    with pytest.raises(ConfigError, match="expected path.to.key=value"):
        resolve_config(base(), ["steps"], reasonrl_registry)


def test_env_substitution_and_missing_variable(reasonrl_registry, monkeypatch):
    monkeypatch.setenv("RUN_SEED", "42")
    config = resolve_config(base(seed="${RUN_SEED}", output_dir="${OUT_DIR:-elsewhere}"), registry=reasonrl_registry)
    assert (config.run.seed, config.run.output_dir) == (42, "elsewhere")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    (problem,) = problems(base(run_name="${NOT_SET_ANYWHERE}"), registry=reasonrl_registry)
    assert problem.startswith("run_name:") and "NOT_SET_ANYWHERE is not set" in problem


def test_secrets_from_env_are_masked_in_the_saved_config(reasonrl_registry, monkeypatch):
    monkeypatch.setenv("MY_TOKEN", "sk-secret-123")
    data = base()
    data["stages"][1]["rewards"] = [{"name": "regex_format", "params": {"pattern": "${MY_TOKEN}"}}]
    text = dump_config(resolve_config(data, registry=reasonrl_registry))
    assert "sk-secret-123" not in text and "${MY_TOKEN}" in text


def test_malformed_yaml_reports_the_line(tmp_path, reasonrl_registry):
    path = tmp_path / "bad.yaml"
    path.write_text("run_name: x\nstages:\n  - stage: sft\n    dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML at line 5"):
        load_config(path, registry=reasonrl_registry)


def test_json_config_and_missing_file(tmp_path, reasonrl_registry):
    path = tmp_path / "c.json"
    path.write_text('{"run_name": "j", "stages": [{"stage": "sft", "dataset": "sort_digits"}]}')
    assert load_config(path, registry=reasonrl_registry).run.run_name == "j"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", registry=reasonrl_registry)


def test_dump_round_trips(reasonrl_registry):
    config = resolve_config(base(), registry=reasonrl_registry)
    again = resolve_config(yaml.safe_load(dump_config(config)), registry=reasonrl_registry)
    assert again.stages[1].params == config.stages[1].params


def test_override_changes_only_the_path_it_names_under_yaml_anchors(tmp_path, reasonrl_registry):
    path = tmp_path / "anchors.yaml"
    path.write_text("run_name: a\nstages:\n"
                    "  - {stage: rl, id: one, dataset: sort_digits, rewards: [sort_accuracy], rollout: &engine {name: hf}}\n"
                    "  - {stage: rl, id: two, dataset: sort_digits, rewards: [sort_accuracy], rollout: *engine}\n")
    config = load_config(path, ["stages[1].rollout.name=vllm"], registry=reasonrl_registry)
    assert [s.params.rollout.name for s in config.stages] == ["hf", "vllm"]
