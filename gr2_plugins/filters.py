"""Rejection filters for teacher traces (the example carries candidates and target_index)."""

from __future__ import annotations

import re

from pydantic import Field

from reasonrl.core.contracts import Verdict
from reasonrl.core.registry import Params
from reasonrl.gr2_plugins.parsing import normalise_sid, parse_answer
from reasonrl.gr2_plugins.prompts import split_trace


class CitesSidParams(Params):
    min_citations: int = Field(1, ge=1, description="distinct candidate or history SIDs the reasoning must cite")


SID_PATTERN = re.compile(r"<\|sid_begin\|>(?:\s*<s_[a-h]_\d+>)+\s*<\|sid_end\|>")


class ValidFormat:
    """The answer parses and ranks exactly the candidates."""

    def __init__(self, params=None) -> None:
        self.params = params

    def check(self, example, completion: str) -> Verdict:
        parsed = parse_answer(completion, example)
        return Verdict(parsed.valid, parsed.error or "")


class Top1Match:
    """GR2's rejection rule: the trace's first recommendation is the held-out item."""

    def __init__(self, params=None) -> None:
        self.params = params

    def check(self, example, completion: str) -> Verdict:
        parsed = parse_answer(completion, example)
        if not parsed.valid:
            return Verdict(False, parsed.error)
        return Verdict(parsed.order[0] == example["target_index"], "top1_mismatch")


class CitesSid:
    """The reasoning before the answer cites items by their semantic ID."""

    def __init__(self, params) -> None:
        self.min_citations = params.min_citations

    def check(self, example, completion: str) -> Verdict:
        parts = split_trace(completion)
        reasoning = parts[0] if parts else completion
        known = {normalise_sid(s) for s in example["candidates"]}
        cited = {normalise_sid(m) for m in SID_PATTERN.findall(reasoning)} & known
        return Verdict(len(cited) >= self.min_citations, "too_few_sid_citations")


class ImprovesInput:
    """The trace's ranking puts the held-out item higher than the input order did, or keeps it
    first where it already was: traces that teach improving on the pre-ranker, not luck."""

    def __init__(self, params=None) -> None:
        self.params = params

    def check(self, example, completion: str) -> Verdict:
        parsed = parse_answer(completion, example)
        if not parsed.valid:
            return Verdict(False, parsed.error)
        before, after = example["target_index"], parsed.order.index(example["target_index"])
        return Verdict(after < before or after == before == 0, "no_improvement")
