"""Every field of every built-in component's params model is read by some code.

A setting nobody reads is a lie in the config: users set it and nothing changes.
"""

import inspect
import re
from pathlib import Path

from pydantic import BaseModel

import reasonrl

SOURCES = [p for folder in ("core", "plugins", "gr2_plugins", "moderation_plugins")
           for p in (Path(reasonrl.__file__).parent / folder).rglob("*.py")]


def params_models(registry) -> set[type[BaseModel]]:
    """The params models of every built-in component and every model nested in their fields."""
    seen: set[type[BaseModel]] = set()
    todo = [info.params_model() for info in registry.all() if info.package == "reasonrl"]
    while todo:
        model = todo.pop()
        if model in seen or not model.__module__.startswith("reasonrl."):
            continue
        seen.add(model)
        for field in model.model_fields.values():
            todo += [t for t in _types(field.annotation) if isinstance(t, type) and issubclass(t, BaseModel)]
    return seen


def _types(annotation):
    yield annotation
    for arg in getattr(annotation, "__args__", ()):
        yield from _types(arg)


def usages_outside(model: type[BaseModel], field: str) -> int:
    """Reads of ``field`` (``.field``, ``"field"``, ``field=``) in the package, not counting its definition."""
    own_file = Path(inspect.getsourcefile(model))
    lines, start = inspect.getsourcelines(model)
    pattern = re.compile(rf"\.{field}\b|[\"']{field}[\"']|\b{field}=(?!=)")
    count = 0
    for path in SOURCES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            inside = path == own_file and start <= number < start + len(lines)
            if not inside and pattern.search(line):
                count += 1
    return count


def test_every_params_field_is_read(reasonrl_registry):
    models = params_models(reasonrl_registry)
    assert len(models) > 40  # every built-in component's model and the models nested in them
    unread = [f"{model.__module__}.{model.__name__}.{name}" for model in models
              for name in model.__dict__.get("__annotations__", {})  # fields this class defines itself
              if name in model.model_fields and usages_outside(model, name) == 0]
    assert unread == []


def test_the_check_finds_an_unread_field():
    class Lonely(BaseModel):
        nobody_reads_this_setting_anywhere: int = 0

    assert usages_outside(Lonely, "nobody_reads_this_setting_anywhere") == 0
