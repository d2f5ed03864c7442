import subprocess
import sys
import types

import pytest

from reasonrl import hookimpl
from reasonrl.core import manager
from reasonrl.core.config import resolve_config
from reasonrl.core.registry import DuplicateComponentError, UnknownComponentError


def test_builtins_register_with_their_origin(reasonrl_registry):
    info = reasonrl_registry.get("policy_optimizers", "dapo")
    assert (info.plugin, info.package) == ("reasonrl.plugins.register", "reasonrl")
    assert {"grpo", "dr_grpo", "dapo", "ppo"} <= set(reasonrl_registry.names("policy_optimizers"))


def test_duplicate_from_a_plugin_names_both(register_plugin):
    plugin = types.ModuleType("dupe_pack")

    @hookimpl
    def register_policy_optimizers(register):
        register("dapo", lambda p: None)

    plugin.register_policy_optimizers = register_policy_optimizers
    with pytest.raises(DuplicateComponentError, match="reasonrl.plugins.register.*dupe_pack"):
        register_plugin(plugin, name="dupe_pack")
    assert manager.get_plugin_manager().get_plugin("dupe_pack") is None


def test_disable_env_skips_named_plugins(monkeypatch):
    monkeypatch.setenv(manager.NO_ENTRY_POINTS_ENV, "1")
    monkeypatch.setenv(manager.DISABLE_ENV, "reasonrl.plugins.register")
    manager.reset()
    try:
        registry = manager.get_registry()
        assert registry.names("policy_optimizers") == []
    finally:
        manager.reset()


class FakeEntryPoint:
    def __init__(self, name, loader, dist="fake-dist"):
        self.name, self._loader, self.dist = name, loader, types.SimpleNamespace(name=dist)

    def load(self):
        return self._loader()


def _plugin_registering(module_name, kind, component, summary=""):
    module = types.ModuleType(module_name)

    def register_hook(register):
        register(component, lambda p: None, summary=summary)

    setattr(module, f"register_{kind}", hookimpl(register_hook))
    return module


def _good_plugin():
    return _plugin_registering("good_ep", "reward_functions", "good_reward", "from an entry point")


def _broken_plugin():
    raise ImportError("No module named 'missing_dependency'")


def test_broken_entry_point_is_reported_and_the_rest_load(monkeypatch):
    monkeypatch.delenv(manager.NO_ENTRY_POINTS_ENV, raising=False)
    eps = [FakeEntryPoint("broken", _broken_plugin, "broken-dist"), FakeEntryPoint("good", _good_plugin)]
    monkeypatch.setattr(manager.importlib.metadata, "entry_points", lambda group: eps)
    manager.reset()
    try:
        registry = manager.get_registry()
        assert registry.get("reward_functions", "good_reward").package == "fake-dist"
        assert "missing_dependency" in registry.failed_plugins["broken"]
        config = {"run_name": "x", "stages": [{"stage": "rl", "dataset": "sort_digits", "rewards": ["from_broken"]}]}
        with pytest.raises(Exception, match="(?s)plugin .broken. failed to load.*missing_dependency"):
            resolve_config(config, registry=registry)
    finally:
        manager.reset()


def test_trace_env_logs_hook_calls():
    code = "from reasonrl.core.manager import get_registry; get_registry()"
    env = {"REASONRL_TRACE": "1", "REASONRL_NO_ENTRY_POINTS": "1", "PATH": ""}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "[reasonrl trace]" in result.stderr and "register_policy_optimizers" in result.stderr


def test_registry_loading_imports_no_torch():
    code = ("import sys; from reasonrl.core.manager import get_registry; get_registry(); "
            "from reasonrl.core.config import load_config; "
            "print(sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_example_distribution_is_discovered_through_its_entry_point(monkeypatch):
    monkeypatch.delenv(manager.NO_ENTRY_POINTS_ENV, raising=False)
    manager.reset()
    try:
        registry = manager.get_registry()
        try:
            info = registry.get("reward_functions", "brevity")
        except UnknownComponentError:
            pytest.fail("install the example plugin first: pip install ./examples/plugins/reasonrl-example-reward")
        assert (info.plugin, info.package) == ("example_reward", "reasonrl-example-reward")
    finally:
        manager.reset()


def _raising_plugin():
    module = types.ModuleType("raising_ep")

    @hookimpl
    def register_reward_functions(register):
        register("half_registered", lambda p: None)
        raise RuntimeError("bad plugin code")

    module.register_reward_functions = register_reward_functions
    return module


def _clashing_plugin():
    return _plugin_registering("clash_ep", "policy_optimizers", "dapo", "another dapo")


def test_registration_errors_are_isolated(monkeypatch, capsys):
    from reasonrl.core.cli import main

    monkeypatch.delenv(manager.NO_ENTRY_POINTS_ENV, raising=False)
    eps = [FakeEntryPoint("raising", _raising_plugin, "raising-dist"), FakeEntryPoint("clash", _clashing_plugin),
           FakeEntryPoint("good", _good_plugin)]
    monkeypatch.setattr(manager.importlib.metadata, "entry_points", lambda group: eps)
    manager.reset()
    try:
        registry = manager.get_registry()
        assert registry.get("reward_functions", "good_reward").package == "fake-dist"
        assert "half_registered" not in registry.names("reward_functions")  # withdrawn with its plugin
        assert "RuntimeError: bad plugin code" in registry.failed_plugins["raising"]
        assert registry.get("policy_optimizers", "grpo").plugin == "reasonrl.plugins.register"
        with pytest.raises(DuplicateComponentError, match="reasonrl.plugins.register.*'clash'"):
            resolve_config({"run_name": "x", "stages": [{"stage": "rl", "dataset": "sort_digits",
                                                          "rewards": ["sort_accuracy"], "optimizer": "dapo"}]},
                           registry=registry)
        assert main(["plugins", "--kind", "policy_optimizers"]) == 0
        out, err = capsys.readouterr()
        assert "CONFLICT: another dapo" in out and "grpo" in out
        assert "plugin 'raising' failed to load" in err and "registered by more than one plugin" in err
        with pytest.raises(SystemExit) as exit_info:
            main(["--help"])  # builds the plugin commands' parsers too
        assert exit_info.value.code == 0 and "rerank" in capsys.readouterr().out
    finally:
        manager.reset()
