"""The generic built-in components, by concern: ``engine`` (models, rollouts, optimizers,
trainers), ``serving`` (serve, export, manifests, the HTTP client), ``data`` (datasets),
``tracking`` (metric trackers); rewards, teachers and the shared evaluation pieces beside them.

Modules that lived directly under ``reasonrl.plugins`` before the sub-packages keep their old
import path (``reasonrl.plugins.rollout`` is ``reasonrl.plugins.engine.rollout``, the same
module object), resolved only when imported, so nothing heavy loads early.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    **{name: "engine" for name in ("rollout", "rl", "training", "supervised", "optimizers", "logits", "checkpoint",
                                   "models", "vllm_engine", "constraint_kit", "manifest")},
    **{name: "serving" for name in ("serve", "serve_openai", "export", "http_client")},
    **{name: "data" for name in ("tasks", "hf_dataset")},
    "trackers": "tracking",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old ``reasonrl.plugins.<module>`` import with the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        parent, _, name = fullname.rpartition(".")
        if parent == __name__ and name in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def __init__(self) -> None:
        self.own_specs: dict[str, object] = {}

    def create_module(self, spec):
        name = spec.name.rpartition(".")[2]
        module = importlib.import_module(f"{__name__}.{MOVED[name]}.{name}")
        self.own_specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module) -> None:
        """The module already ran at its new place; importing it under the old name re-labelled
        its spec, so it gets its own back (``importlib.reload`` and tools read it)."""
        module.__spec__ = self.own_specs.pop(module.__name__, module.__spec__)


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
