"""Pytest fixtures for plugin authors (auto-loaded as a pytest plugin).

- ``reasonrl_registry``: a freshly loaded registry of the built-in packs only; entry
  points are not auto-loaded, so the test sees no stray installed plugin.
- ``register_plugin``: ``register_plugin(module_or_object, name="x")`` adds a throwaway
  plugin for one test and removes it afterwards.
- ``random_decode``: drive a decoding constraint with a random policy (does every answer parse?).
- ``JsonHandler`` and ``serve_loopback``: a fake HTTP endpoint on 127.0.0.1 (for a
  teacher or judge that talks to an OpenAI-compatible server).

Example::

    def test_my_reward(register_plugin):
        register_plugin(my_plugin_module)
        reward = get_registry().build("reward_functions", "my_reward", {})
"""

from __future__ import annotations

import pytest

from reasonrl.core import manager
from reasonrl.testing.helpers import JsonHandler, free_port, random_decode, serve_loopback  # noqa: F401

__all__ = ["reasonrl_registry", "register_plugin", "JsonHandler", "free_port", "random_decode", "serve_loopback"]


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


