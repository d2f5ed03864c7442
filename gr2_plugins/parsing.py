"""Parse a reranker's answer: JSON ``{"explanation": ..., "recommendations": [SID, ...]}``, or,
for examples with ``answer_format: index``, ``[N, ...]``: candidate numbers (1-based, the
pre-ranker's order), best first; candidates left out keep their input order after them.

Failures are classified so reports can say *why* outputs were unusable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from reasonrl.plugins.rewards import extract_json_object

NOT_JSON = "not_json"
UNKNOWN_SID = "unknown_sid"
NOT_PERMUTATION = "not_permutation"
MISSING_ITEMS = "missing_items"
UNKNOWN_INDEX = "unknown_index"
FAILURES = (NOT_JSON, UNKNOWN_SID, NOT_PERMUTATION, MISSING_ITEMS, UNKNOWN_INDEX)

_SPACE = re.compile(r"\s+")


@dataclass
class ParsedRanking:
    order: list[int] | None  # candidate indices (0-based, input order), best first
    error: str | None
    explanation: str = ""

    @property
    def valid(self) -> bool:
        return self.error is None


def normalise_sid(text: str) -> str:
    return _SPACE.sub("", str(text))


def answer_object(text: str) -> dict | None:
    """The answer's JSON object: the first top-level object holding a ``recommendations`` list,
    else the object from the last ``{"explanation"`` on (a stray quote or brace in the reasoning
    can hide the first one from the scan)."""
    obj = extract_json_object(text)
    if not has_list(obj) and '{"explanation"' in text:
        obj = extract_json_object(text[text.rindex('{"explanation"'):])
    return obj if has_list(obj) else None


def has_list(obj) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("recommendations"), list)


def parse_ranking(text: str, candidates: Sequence[str]) -> ParsedRanking:
    """Map the answer's recommendation list onto the candidate list.

    >>> parse_ranking('{"explanation": "x", "recommendations": ["<b>", "<a>"]}', ["<a>", "<b>"]).order
    [1, 0]
    >>> parse_ranking('{"recommendations": ["<a>", "<a>"]}', ["<a>", "<b>"]).error
    'not_permutation'
    """
    obj = answer_object(text)
    if obj is None:
        return ParsedRanking(None, NOT_JSON)
    explanation = str(obj.get("explanation", ""))
    index = {normalise_sid(c): i for i, c in enumerate(candidates)}
    order = []
    for entry in obj["recommendations"]:
        position = index.get(normalise_sid(entry))
        if position is None:
            return ParsedRanking(None, UNKNOWN_SID, explanation)
        order.append(position)
    if len(set(order)) != len(order):
        return ParsedRanking(None, NOT_PERMUTATION, explanation)
    if len(order) != len(candidates):
        return ParsedRanking(None, MISSING_ITEMS, explanation)
    return ParsedRanking(order, None, explanation)


def candidate_number(entry, size: int) -> int | None:
    """0-based candidate index of an answer entry: 3, "3" or "[3]" with 1 <= n <= size."""
    text = str(entry).strip().strip("[]").strip()
    if isinstance(entry, bool) or not text.isdigit() or not 1 <= int(text) <= size:
        return None
    return int(text) - 1


def parse_index_ranking(text: str, size: int) -> ParsedRanking:
    """Map an index answer onto the candidates: the listed numbers first, the rest in input order.

    >>> parse_index_ranking('{"explanation": "x", "recommendations": [3, 1]}', 4).order
    [2, 0, 1, 3]
    >>> parse_index_ranking('{"recommendations": [5]}', 4).error
    'unknown_index'
    """
    obj = answer_object(text)
    if obj is None or not obj["recommendations"]:
        return ParsedRanking(None, NOT_JSON)
    explanation = str(obj.get("explanation", ""))
    order = [candidate_number(entry, size) for entry in obj["recommendations"]]
    if None in order:
        return ParsedRanking(None, UNKNOWN_INDEX, explanation)
    if len(set(order)) != len(order):
        return ParsedRanking(None, NOT_PERMUTATION, explanation)
    return ParsedRanking(order + [i for i in range(size) if i not in order], None, explanation)


def parse_answer(text: str, example) -> ParsedRanking:
    """The ranking an answer gives for ``example``, in the example's answer format."""
    if example.get("answer_format") == "index":
        return parse_index_ranking(text, len(example["candidates"]))
    return parse_ranking(text, example["candidates"])
