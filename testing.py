"""Pytest fixtures for plugin authors (auto-loaded as a pytest plugin).

- ``reasonrl_registry``: a freshly loaded registry of the built-in packs only; entry
  points are not auto-loaded, so the test sees no stray installed plugin.
- ``register_plugin``: ``register_plugin(module_or_object, name="x")`` adds a throwaway
  plugin for one test and removes it afterwards.

Example::

    def test_my_reward(register_plugin):
        register_plugin(my_plugin_module)
        reward = get_registry().build("reward_functions", "my_reward", {})
"""

from __future__ import annotations

import pytest

from reasonrl.core import manager


@pytest.fixture
def reasonrl_registry(monkeypatch):
    monkeypatch.setenv(manager.NO_ENTRY_POINTS_ENV, "1")
    manager.reset()
    yield manager.get_registry()
    manager.reset()


@pytest.fixture
def register_plugin(reasonrl_registry):
    added: list[str] = []

    def register(plugin, name: str | None = None, package: str = "(test)"):
        name = name or getattr(plugin, "__name__", None) or f"test-plugin-{len(added)}"
        manager.register_plugin(plugin, name=name, package=package)
        added.append(name)
        return reasonrl_registry

    yield register
    for name in added:
        manager.unregister_plugin(name)
