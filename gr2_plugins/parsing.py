"""Parse a reranker's answer: JSON ``{"explanation": ..., "recommendations": [SID, ...]}``.

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
FAILURES = (NOT_JSON, UNKNOWN_SID, NOT_PERMUTATION, MISSING_ITEMS)

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


def parse_ranking(text: str, candidates: Sequence[str]) -> ParsedRanking:
    """Map the answer's recommendation list onto the candidate list.

    >>> parse_ranking('{"explanation": "x", "recommendations": ["<b>", "<a>"]}', ["<a>", "<b>"]).order
    [1, 0]
    >>> parse_ranking('{"recommendations": ["<a>", "<a>"]}', ["<a>", "<b>"]).error
    'not_permutation'
    """
    obj = extract_json_object(text)
    if not isinstance(obj, dict) or not isinstance(obj.get("recommendations"), list):
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
