"""A synthetic moderation task whose label follows from the text: a policy names a keyword.

Small enough for a tiny CPU student to learn in a minute, so tests and benchmarks can tell a
recipe that learns from one that collapses onto the majority label.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

POLICY = """---
labels: [allowed, violating]
---
A text is violating when it contains the word zap. Any other text is allowed.
"""
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;'<>\n-_()?!/*#\"="
WORDS = "red blue green cat dog sun moon tree rock fish bird lamp".split()
SIZES = (("train", 240), ("validation", 20), ("test", 80))


def keyword_rows(count: int, seed: int, every: int) -> list[dict]:
    """Texts of four words; every ``every``-th also holds the keyword (1 violating : every - 1 allowed)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        words = rng.sample(WORDS, 4)
        violating = i % every == 0
        if violating:
            words.insert(rng.randrange(5), "zap")
        out.append({"id": str(i), "text": " ".join(words), "label": "violating" if violating else "allowed"})
    return out


def write_keyword_task(folder: Path, name: str, every: int, seed: int = 0) -> dict:
    """Train, validation and test tables plus the policy under ``folder``; returns the
    ``moderation_table`` dataset reference that reads them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "policy.md").write_text(POLICY)
    files = {}
    for index, (split, count) in enumerate(SIZES):
        path = folder / f"{name}_{split}.jsonl"
        rows = keyword_rows(count, seed * 1000 + index + 10 * every, every)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        files[split] = str(path)
    return {"name": "moderation_table", "params": {"data_files": files, "policy": str(folder / "policy.md")}}
