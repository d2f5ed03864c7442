"""The import direction of docs/architecture.md: core <- plugins <- {gr2, moderation}."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
FORBIDDEN = {
    "core": {"plugins", "gr2_plugins", "moderation_plugins"},
    "plugins": {"gr2_plugins", "moderation_plugins"},
    "gr2_plugins": {"moderation_plugins"},
    "moderation_plugins": {"gr2_plugins"},
}


def imported_packs(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "reasonrl" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("pack", sorted(FORBIDDEN))
def test_import_direction(pack):
    for path in (ROOT / pack).rglob("*.py"):
        bad = imported_packs(path) & FORBIDDEN[pack]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


# what each part of plugins/ may import from the others (any import, in a function or not)
PLUGIN_RULES = {
    "data": set(), "tracking": set(), "rewards": set(), "register": {"engine"}, "studies": set(),
    "engine": {"rewards"},
    "serving": {"engine"},
    "evaluation": {"engine"},
    "teachers": {"engine", "serving"},
}


def plugin_part(path: Path) -> str:
    relative = path.relative_to(ROOT / "plugins")
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("reasonrl."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("reasonrl."))
    return found


def test_plugins_sub_packages_import_only_what_their_rule_allows():
    for path in (ROOT / "plugins").rglob("*.py"):
        part = plugin_part(path)
        if part == "__init__":
            continue
        others = {m.split(".")[2] for m in imported_modules(path) if m.startswith("reasonrl.plugins.")} - {part}
        assert others <= PLUGIN_RULES[part], f"{path.relative_to(ROOT)} ({part}) imports {others - PLUGIN_RULES[part]}"


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in relative.parts if p != "__init__"]
    return ".".join(["reasonrl", *parts])


def test_no_import_cycle_among_the_library_modules():
    """Imports between the library's modules form no cycle, counting those inside functions
    (which defer a heavy library, not a design problem: two modules needing each other)."""
    import graphlib

    modules = {module_name(p): p for pack in ("core", "plugins", "gr2_plugins", "moderation_plugins")
               for p in (ROOT / pack).rglob("*.py")}
    graph = {name: {m for m in imported_modules(path) if m in modules and m != name}
             for name, path in modules.items()}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


def test_modules_that_moved_into_sub_packages_keep_their_old_import_path():
    import importlib

    from reasonrl.plugins import MOVED

    for name, package in MOVED.items():
        new = importlib.import_module(f"reasonrl.plugins.{package}.{name}")
        assert importlib.import_module(f"reasonrl.plugins.{name}") is new
        assert new.__spec__.name == f"reasonrl.plugins.{package}.{name}"


def test_no_module_over_400_lines_class_over_200_or_function_over_50():
    """Size limits that keep each piece reviewable in one sitting."""
    too_big = []
    for pack in ("core", "plugins", "gr2_plugins", "moderation_plugins"):
        for path in (ROOT / pack).rglob("*.py"):
            source = path.read_text()
            where = path.relative_to(ROOT)
            if len(source.splitlines()) > 400:
                too_big.append(f"{where}: {len(source.splitlines())} lines")
            for node in ast.walk(ast.parse(source)):
                size = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
                if isinstance(node, ast.ClassDef) and size > 200:
                    too_big.append(f"{where}: class {node.name} {size} lines")
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > 50:
                    too_big.append(f"{where}: {node.name}() {size} lines")
    assert not too_big, too_big


HEAVY = {"torch", "transformers", "peft", "accelerate", "datasets", "sklearn", "scipy", "matplotlib", "fastapi",
         "uvicorn", "starlette", "vllm", "deepspeed", "safetensors", "tokenizers", "lightgbm", "faiss", "numpy",
         "huggingface_hub", "httpx", "tenacity", "tqdm", "pandas", "pyarrow"}


def loads_heavy(module: str, seen: tuple = ()) -> bool:
    """True when importing ``module`` imports a heavy library (directly or through the library's own modules)."""
    parts = module.split(".")[1:]
    path = ROOT.joinpath(*parts)
    path = path / "__init__.py" if (path / "__init__.py").exists() else path.with_suffix(".py")
    if not path.exists() or module in seen:
        return False
    for node in ast.parse(path.read_text()).body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        for name in names:
            if name.split(".")[0] in HEAVY or (name.startswith("reasonrl.") and loads_heavy(name, seen + (module,))):
                return True
    return False


def test_library_imports_inside_functions_only_defer_a_heavy_library():
    """A function-level import of the library's own module is for a module that loads torch (or
    another heavy library); a light one belongs at the top, where readers look for it."""
    light = []
    for pack in ("core", "plugins", "gr2_plugins", "moderation_plugins"):
        for path in (ROOT / pack).rglob("*.py"):
            for function in ast.walk(ast.parse(path.read_text())):
                if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(function):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reasonrl.") \
                            and not loads_heavy(node.module):
                        light.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
    assert not light, light
