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


class RankingCheck:
    """A filter on the ranking a trace gives: invalid answers are rejected with their parse
    error, valid ones judged by ``judge(order, target_index)``."""

    def __init__(self, params=None) -> None:
        self.params = params

    def judge(self, order: list[int], target: int) -> Verdict:
        raise NotImplementedError

    def check(self, example, completion: str) -> Verdict:
        parsed = parse_answer(completion, example)
        if not parsed.valid:
            return Verdict(False, parsed.error)
        return self.judge(parsed.order, example["target_index"])


class Top1Match(RankingCheck):
    """GR2's rejection rule: the trace's first recommendation is the held-out item."""

    def judge(self, order: list[int], target: int) -> Verdict:
        return Verdict(order[0] == target, "top1_mismatch")


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


class ImprovesInput(RankingCheck):
    """The trace's ranking puts the held-out item higher than the input order did, or keeps it
    first where it already was: traces that teach improving on the pre-ranker, not luck."""

    def judge(self, order: list[int], target: int) -> Verdict:
        after = order.index(target)
        return Verdict(after < target or after == target == 0, "no_improvement")
