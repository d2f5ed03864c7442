"""The ``feature_ranker`` teacher: ranks by the evidence model's score and cites the evidence.

It reads the index teacher prompt ``gr2_prepare`` writes (``answer_format: index``): each
candidate line carries what the viewing logs say about it and the score of a logistic
regression fit on the training lists (``prepare/evidence_model.json``). Samples differ by
Gumbel noise on the scores, so rejection sampling can keep the traces that improve on the
input order. Its reasoning names each cited candidate once, with the evidence that moved it.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Literal, Sequence

from pydantic import Field

from reasonrl.core.errors import ReasonRLError
from reasonrl.core.registry import Params
from reasonrl.gr2_plugins.prompts import answer_json
from reasonrl.gr2_plugins.taste_teacher import gumbel_order

_CANDIDATE = re.compile(r"^\[(?P<n>\d+)\] (?:(?P<tags>after#\d+ near#\d+ trend#\d+) \| )?.*?\) \| [^|]* \| "
                        r"(?P<evidence>.*) \| score: (?P<score>-?[\d.]+)$")
_AFTER_TAG = re.compile(r"after#(\d+)")
_AFTER = re.compile(r"right after (?P<title>.*): (?P<count>\d+) viewers")
_NEAR = re.compile(r"near your recent films: (\d+)")
_RECENT = re.compile(r"views in the last 4 weeks: (\d+)")
_TARGET = re.compile(r"actually watched \[(\d+)\] next")


class FeatureTeacherParams(Params):
    temperature: float = Field(0.5, ge=0, description="Gumbel noise on the scores: 0 = always the model's order")
    answer_items: int = Field(3, gt=0, description="numbers in the answer (the rest keep the input order)")
    order_by: Literal["model", "co_watching"] = Field("model", description=(
        "model: the evidence model's score; co_watching: viewers who watched the candidate right after the last "
        "film, ties in input order (a rule a student can read off the prompt's after# tags)"))
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
    after_place: int | None = None  # the line's after# tag, where the prompt has tags

    def why(self) -> str:
        """The strongest piece of evidence for this candidate, in words (tagged prompts: its
        after# place and count, short, so the student's reasoning stays a lookup)."""
        if self.after_place is not None:
            return f"after#{self.after_place}, {self.after_last} viewers right after your last film"
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
        place = _AFTER_TAG.match(match["tags"]) if match["tags"] else None
        candidates.append(Candidate(int(match["n"]), float(match["score"]), int(after["count"]) if after else 0,
                                    after["title"] if after else "", int(near.group(1)) if near else 0,
                                    int(recent.group(1)) if recent else 0, int(place.group(1)) if place else None))
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
        order = gumbel_order(self.scores(candidates), self.params.temperature, self.random)
        if target is not None:
            order = sorted(order, key=lambda i: candidates[i].number != target)
        return self.explain([candidates[i] for i in order[: self.params.answer_items]])

    def scores(self, candidates: Sequence[Candidate]) -> list[float]:
        if self.params.order_by == "model":
            return [c.score for c in candidates]
        # co-watching count first; the tiny decrement keeps ties in input order at temperature 0
        return [math.log1p(c.after_last) - 1e-6 * c.number for c in candidates]

    def explain(self, chosen: Sequence[Candidate]) -> str:
        lines = [f"[{c.number}]: {c.why()}." for c in chosen]
        lead = chosen[0]
        summary = f"[{lead.number}] has the strongest evidence: {lead.why()}."
        return "\n".join(lines + [answer_json(summary, [c.number for c in chosen])])

    def generate(self, prompts: Sequence[str], n: int = 1) -> list[list[str]]:
        return [[self.sample(prompt) for _ in range(n)] for prompt in prompts]
