"""The ``feature_ranker`` teacher: ranks by the evidence model's score and cites the evidence.

It reads the index teacher prompt ``gr2_prepare`` writes (``answer_format: index``): each
candidate line carries what the viewing logs say about it and the score of a logistic
regression fit on the training lists (``prepare/evidence_model.json``). Samples differ by
Gumbel noise on the scores, so rejection sampling can keep the traces that improve on the
input order. Its reasoning names each cited candidate once, with the evidence that moved it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal, Sequence

from pydantic import Field

from reasonrl.core.errors import ReasonRLError
from reasonrl.core.registry import Params
from reasonrl.gr2_plugins.prompts import HINT_TITLE, answer_json, hint_numbers, leaders, leaders_line
from reasonrl.gr2_plugins.taste_teacher import gumbel_order

_CANDIDATE = re.compile(r"^\[(?P<n>\d+)\] .*?\) \| [^|]* \| (?P<evidence>.*) \| score: (?P<score>-?[\d.]+)$")
_AFTER = re.compile(r"right after (?P<title>.*): (?P<count>\d+) viewers")
_NEAR = re.compile(r"near your recent films: (\d+)")
_RECENT = re.compile(r"views in the last 4 weeks: (\d+)")
_TARGET = re.compile(r"actually watched \[(\d+)\] next")
_HINT = re.compile(rf"^{HINT_TITLE} \([\d, ]+ viewers\): (?P<numbers>[\d, ]+)$", re.MULTILINE)


class FeatureTeacherParams(Params):
    temperature: float = Field(0.5, ge=0, description="Gumbel noise on the scores: 0 = always the model's order")
    answer_items: int = Field(3, gt=0, description="numbers in the answer (the rest keep the input order)")
    order_by: Literal["model", "co_watching"] = Field("model", description=(
        "model: the evidence model's score plus Gumbel noise; co_watching: the candidates most watched right after "
        "the last film, most first (those with a count of 0 keep the input order; temperature unused), in the words "
        "of the prompt's evidence summary (gr2_prepare evidence_summary), so the student can copy the lookup; when the "
        "prompt ends with the co-watching hint (gr2_prepare evidence_hint), the trace is only the answer, its "
        "explanation repeating the hint's numbers"))
    seed: int = 0
    """seed of the Gumbel noise"""


@dataclass
class Candidate:
    number: int
    score: float
    after_last: int
    last_title: str
    near_recent: int
    recent_views: int

    def why(self) -> str:
        """The strongest piece of evidence for this candidate, in words."""
        if self.after_last:
            return f"watched right after {self.last_title} by {self.after_last} viewers"
        if self.near_recent:
            return f"watched near your recent films {self.near_recent} times"
        if self.recent_views:
            return f"{self.recent_views} views in the last 4 weeks"
        return "little evidence either way"


def read_candidates(prompt: str) -> tuple[list[Candidate], int | None]:
    candidates = []
    for line in prompt.splitlines():
        match = _CANDIDATE.match(line.strip())
        if match is None:
            continue
        evidence = match["evidence"]
        after, near, recent = _AFTER.search(evidence), _NEAR.search(evidence), _RECENT.search(evidence)
        candidates.append(Candidate(int(match["n"]), float(match["score"]), int(after["count"]) if after else 0,
                                    after["title"] if after else "", int(near.group(1)) if near else 0,
                                    int(recent.group(1)) if recent else 0))
    if not candidates:
        raise ReasonRLError("feature_ranker teacher: no scored candidate lines ('[n] ... | score: x') in the prompt; "
                            "it reads the teacher prompts of gr2_prepare with answer_format: index")
    target = _TARGET.search(prompt)
    return candidates, int(target.group(1)) if target else None


class FeatureRankerTeacher:
    """Samples traces ordered by the evidence model's score plus Gumbel noise."""

    def __init__(self, params: FeatureTeacherParams) -> None:
        self.params = params
        self.random = random.Random(params.seed)

    def sample(self, prompt: str) -> str:
        candidates, target = read_candidates(prompt)
        if self.params.order_by == "co_watching":
            hint = _HINT.search(prompt)
            return self.copy_hint(hint["numbers"]) if hint else self.co_watching(candidates)
        order = gumbel_order([c.score for c in candidates], self.params.temperature, self.random)
        if target is not None:
            order = sorted(order, key=lambda i: candidates[i].number != target)
        return self.explain([candidates[i] for i in order[: self.params.answer_items]])

    def co_watching(self, candidates: Sequence[Candidate]) -> str:
        """The co-watching leaders, said as the prompt's summary line says them, then the answer."""
        pairs = leaders([{"after_last": c.after_last} for c in candidates], "after_last", self.params.answer_items)
        numbers = [candidates[n - 1].number for n, _ in pairs]
        why = (f"[{numbers[0]}] was watched right after your last film by the most viewers." if numbers
               else "No candidate was watched right after your last film; the upstream order stays.")
        return leaders_line("after_last", pairs) + "\n" + answer_json(why, numbers or [candidates[0].number])

    @staticmethod
    def copy_hint(numbers: str) -> str:
        """The hint's numbers as the answer, said in the explanation first in the hint's own words."""
        chosen = [int(n) for n in numbers.split(", ")]
        return answer_json(f"{HINT_TITLE}: {hint_numbers(chosen)}", chosen)

    def explain(self, chosen: Sequence[Candidate]) -> str:
        lines = [f"[{c.number}]: {c.why()}." for c in chosen]
        lead = chosen[0]
        summary = f"[{lead.number}] has the strongest evidence: {lead.why()}."
        return "\n".join(lines + [answer_json(summary, [c.number for c in chosen])])

    def generate(self, prompts: Sequence[str], n: int = 1) -> list[list[str]]:
        return [[self.sample(prompt) for _ in range(n)] for prompt in prompts]
