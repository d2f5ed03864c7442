import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from reasonrl.core.cli import main

ROOT = Path(__file__).parents[1]


def test_plugins_json_has_exactly_the_documented_keys(reasonrl_registry, capsys):
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(set(r) == {"kind", "name", "plugin", "package", "where", "summary"} for r in rows)
    dapo = next(r for r in rows if r["name"] == "dapo")
    assert {"kind": "policy_optimizers", "name": "dapo", "where": "reasonrl.plugins.engine.optimizers:dapo"}.items() <= dapo.items()
    module, _, attribute = dapo["where"].partition(":")
    assert callable(getattr(importlib.import_module(module), attribute))  # one hop from the name to the code


def test_unknown_kind_is_an_error(reasonrl_registry, capsys):
    assert main(["plugins", "--kind", "rewards"]) == 2
    assert "unknown component kind 'rewards'" in capsys.readouterr().err


def test_plugins_table_and_kind_filter(reasonrl_registry, capsys):
    main(["plugins", "--kind", "trackers"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["kind", "name", "plugin", "package", "summary"]
    assert {line.split()[1] for line in out[2:]} == {"jsonl", "tensorboard", "wandb", "mlflow"}


def test_config_validate_reports_errors_with_exit_code_2(tmp_path, reasonrl_registry, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("run_name: x\nstages:\n  - stage: rl\n    dataset: sort_digits\n    rewards: [nope]\n")
    assert main(["config", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "stages[0].rewards[0].name: unknown reward_functions name 'nope'" in err


def test_demo_list_shows_the_sort_demo(reasonrl_registry, capsys):
    main(["demo", "--list"])
    assert "sort" in capsys.readouterr().out


def test_python_dash_m_works():
    result = subprocess.run([sys.executable, "-m", "reasonrl", "plugins", "--kind", "stages"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and " rl " in result.stdout


@pytest.mark.parametrize("config", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_validates(config, reasonrl_registry):
    assert main(["config", "validate", str(config)]) == 0


def test_version(capsys):
    from reasonrl import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"reasonrl {__version__}"


def test_plugins_into_a_closed_pipe_is_quiet(reasonrl_registry, monkeypatch):
    import io
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader left, as `| head` does after its lines
    closed = io.TextIOWrapper(io.FileIO(write_end, "w"), write_through=True)
    monkeypatch.setattr(sys, "stdout", closed)
    assert main(["plugins", "--json"]) == 0  # no BrokenPipeError traceback
    closed.write("more")  # stdout now points at devnull: the interpreter's last flush cannot fail
    closed.flush()


def test_plugins_params_lists_every_option_with_type_default_and_description(reasonrl_registry, capsys):
    assert main(["plugins", "--params", "dapo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("policy_optimizers 'dapo' (reasonrl.plugins.engine.optimizers:dapo)")
    rows = {line.split()[0]: line.split(None, 3)[1:] for line in lines[3:] if line.strip()}
    assert rows["epsilon_high"][:2] == ["float", "0.28"] and rows["epsilon_high"][2].startswith("upper clip")
    assert set(rows) == {"epsilon_low", "epsilon_high", "dynamic_sampling", "mask_truncated", "std_eps", "beta",
                         "kl_estimator"}


def test_plugins_params_nested_defaults_come_from_the_parent(reasonrl_registry, capsys):
    assert main(["plugins", "--params", "hf", "--kind", "teacher_generators", "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in entry["params"]}
    assert rows["model"]["default"] == "(below)"
    assert rows["model.source"]["default"] == "'packaged'"  # the teacher's default model, not ModelSpec's 'tiny'
    assert rows["sampling.temperature"]["default"] == "0.8"


def test_plugins_params_name_used_by_several_kinds_lists_each(reasonrl_registry, capsys):
    assert main(["plugins", "--params", "jsonl", "--json"]) == 0
    assert {e["kind"] for e in json.loads(capsys.readouterr().out)} == {"trackers", "datasets"}
    assert main(["plugins", "--params", "nope"]) == 2
    assert "no component named 'nope'" in capsys.readouterr().err


def test_every_built_in_params_field_has_a_description(reasonrl_registry):
    from reasonrl.core.config import RunConfig
    from reasonrl.core.registry import describe_params

    undocumented = [f"{info.kind}/{info.name}: {row['name']}" for info in reasonrl_registry.all()
                    if info.package == "reasonrl"
                    for row in describe_params(info.params_model()) if not row["description"]]
    undocumented += [f"run config: {row['name']}" for row in describe_params(RunConfig) if not row["description"]]
    assert undocumented == []


@pytest.mark.parametrize("config", sorted((ROOT / "examples" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_example_accelerate_configs_load(config):
    from accelerate.commands.config.config_args import ClusterConfig

    loaded = ClusterConfig.from_yaml_file(str(config))
    assert loaded.num_processes >= 8 and str(loaded.mixed_precision) == "bf16"
