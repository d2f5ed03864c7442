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
