"""How a bench script saves its table: the command that printed it, then the table."""

from __future__ import annotations

import sys
from pathlib import Path


def save_table(out: Path | None, script: str, argv: list[str] | None, text: str) -> None:
    """Write ``text`` to ``out`` (when given) under the line ``Command: python bench/<script> ...``."""
    if out is None:
        return
    command = " ".join([f"python bench/{script}"] + (argv if argv is not None else sys.argv[1:]))
    Path(out).write_text(f"Command: {command}\n\n{text}")
