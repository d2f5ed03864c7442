"""The plugin manager: built-in packs, then entry points, then the registry.

Built-in packs are ordinary plugin modules listed in ``DEFAULT_PLUGINS``; third-party
packages register through the ``reasonrl`` entry-point group. These are the only
modules reasonrl imports implicitly.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import types
from typing import Any, Callable

import pluggy
from pydantic import BaseModel

from reasonrl.core import hookspecs
from reasonrl.core.hookspecs import KINDS, PROJECT
from reasonrl.core.registry import ComponentInfo, DuplicateComponentError, NoParams, Registry

DEFAULT_PLUGINS = (
    "reasonrl.plugins.register",
    "reasonrl.gr2_plugins.register",
    "reasonrl.moderation_plugins.register",
)
ENTRY_POINT_GROUP = PROJECT
DISABLE_ENV = "REASONRL_DISABLE_PLUGINS"
TRACE_ENV = "REASONRL_TRACE"
# Tests set this to load built-ins only, whatever is installed in the environment.
NO_ENTRY_POINTS_ENV = "REASONRL_NO_ENTRY_POINTS"

_state: dict[str, Any] = {}


def disabled_plugins() -> set[str]:
    return {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_ENV, "") not in ("", "0"):
        pm.trace.root.setwriter(lambda message: sys.stderr.write(f"[reasonrl trace] {message}"))
        pm.enable_tracing()
    return pm


def load_plugins(pm: pluggy.PluginManager, *, entry_points: bool = True) -> dict[str, tuple[str, str]]:
    """Register built-ins, then entry points. Returns failures: name -> (package, error)."""
    blocked = disabled_plugins()
    for name in blocked:
        pm.set_blocked(name)
    failures: dict[str, tuple[str, str]] = {}
    for module_name in DEFAULT_PLUGINS:
        if module_name in blocked:
            continue
        module = importlib.import_module(module_name)
        pm.register(module, name=module_name)
        _packages[module_name] = "reasonrl"
    if entry_points:
        failures.update(_load_entry_points(pm, blocked))
    pm.check_pending()
    return failures


def _load_entry_points(pm: pluggy.PluginManager, blocked: set[str]) -> dict[str, tuple[str, str]]:
    failures = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in blocked or pm.get_plugin(ep.name) is not None:
            continue
        package = ep.dist.name if ep.dist is not None else "?"
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            failures[ep.name] = (package, f"{type(exc).__name__}: {exc}")
            continue
        pm.register(plugin, name=ep.name)
        _packages[ep.name] = package
    return failures


_packages: dict[str, str] = {}


def fill_registry(pm: pluggy.PluginManager, registry: Registry) -> None:
    """Call every ``register_<kind>`` hook, one plugin at a time, to record origins.

    A plugin whose hook raises is reported like one that failed to import: its
    components are withdrawn and the other plugins still load. A name two plugins
    register is a conflict: both stay listed, and only configs naming it fail.
    """
    for plugin_name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        try:
            _register_components(pm, registry, plugin_name, plugin)
        except Exception as exc:  # one broken plugin must not take the CLI down
            registry.remove_plugin(plugin_name)
            package = _packages.get(plugin_name, "?")
            registry.failed_plugins[plugin_name] = (f"its register hook raised {type(exc).__name__}: {exc} "
                                                    f"(package {package})")


def _register_components(pm: pluggy.PluginManager, registry: Registry, name: str, plugin: object) -> None:
    others = [p for _, p in pm.list_name_plugin() if p is not None and p is not plugin]
    for kind in KINDS:
        caller = pm.subset_hook_caller(f"register_{kind}", remove_plugins=others)
        caller(register=_registrar(registry, kind, name, _packages.get(name, "?")))


def _registrar(registry: Registry, kind: str, plugin: str, package: str) -> Callable[..., None]:
    def register(
        name: str,
        factory: Callable[..., Any] | str,
        params: type[BaseModel] | str = NoParams,
        summary: str = "",
    ) -> None:
        registry.add(ComponentInfo(kind, name, factory, params, plugin, package, summary or _summary(factory)))

    return register


def _summary(factory: Any) -> str:
    doc = getattr(factory, "__doc__", None) if callable(factory) else None
    return (doc or "").strip().splitlines()[0] if doc else ""


def get_registry() -> Registry:
    """The process-wide registry, built once on first use."""
    if "registry" not in _state:
        pm = new_plugin_manager()
        failures = load_plugins(pm, entry_points=os.environ.get(NO_ENTRY_POINTS_ENV, "") in ("", "0"))
        registry = Registry()
        registry.failed_plugins = {name: f"{err} (package {pkg})" for name, (pkg, err) in failures.items()}
        fill_registry(pm, registry)
        _state.update(pm=pm, registry=registry)
    return _state["registry"]


def get_plugin_manager() -> pluggy.PluginManager:
    get_registry()
    return _state["pm"]


def register_plugin(plugin: types.ModuleType | object, name: str, package: str = "(test)") -> None:
    """Add a plugin to the live registry (used by ``reasonrl.testing``)."""
    pm = get_plugin_manager()
    registry = _state["registry"]
    pm.register(plugin, name=name)
    _packages[name] = package
    try:
        _register_components(pm, registry, name, plugin)
        clashes = [key for key, claims in registry.conflicts.items() if any(c.plugin == name for c in claims)]
        if clashes:
            raise DuplicateComponentError(registry.conflict_message(*clashes[0]))
    except Exception:
        unregister_plugin(name)
        raise


def unregister_plugin(name: str) -> None:
    pm = get_plugin_manager()
    pm.unregister(name=name)
    _state["registry"].remove_plugin(name)
    _packages.pop(name, None)


def reset() -> None:
    """Forget the loaded plugins; the next ``get_registry()`` loads them again."""
    _state.clear()
