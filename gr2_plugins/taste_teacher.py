"""A rule-based teacher that reads the GR2 teacher prompt and writes a reasoning trace.

It exists because no LLM that fits 2 CPU cores writes valid traces (the packaged
SmolLM2-135M-Instruct had 0 of 48 accepted). It reads exactly what an LLM teacher
reads — the history and candidate lines of the prompt — scores each candidate by
recency-weighted genre affinity and era proximity, perturbs the scores with Gumbel
noise so that repeated samples differ (which is what makes rejection sampling
meaningful), and explains its order citing movies by SID. A served large model via
``openai_compatible`` replaces it by config.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from pydantic import Field

from reasonrl.core.errors import ReasonRLError
from reasonrl.core.registry import Params
from reasonrl.gr2_plugins.prompts import answer_json


class TasteTeacherParams(Params):
    temperature: float = Field(0.3, ge=0, description="Gumbel noise scale: 0 = always the same order")
    decay: float = Field(0.7, gt=0, le=1, description="weight of a history item per step back in time")
    era_weight: float = Field(0.3, ge=0)
    """weight of the release-era match in a candidate's score"""
    prior_weight: float = Field(0.3, ge=0, description="bonus for the upstream ranker's early positions")
    explained_items: int = Field(3, ge=1, description="candidates the reasoning discusses")
    copy_share: float = Field(0.0, ge=0, le=1, description=(
        "probability that a sample keeps the input order, answer included (a teacher with a copying "
        "habit: the start policy of the reward-hacking experiment)"))
    seed: int = 0
    """seed of the Gumbel noise"""


_LINE = re.compile(r"^(?P<sid><\|sid_begin\|>.*?<\|sid_end\|>) (?P<title>.*) \((?P<year>[^)]*)\) \| (?P<genres>.*)$")
_TARGET = re.compile(r"actually watched (<\|sid_begin\|>.*?<\|sid_end\|>) next")


@dataclass
class Movie:
    sid: str
    title: str
    year: int | None
    genres: list[str]


def parse_movie(line: str) -> Movie | None:
    match = _LINE.match(line.strip())
    if match is None:
        return None
    year = match["year"]
    return Movie(match["sid"], match["title"], int(year) if year.isdigit() else None,
                 [g.strip() for g in match["genres"].split(",") if g.strip()])


def read_prompt(prompt: str) -> tuple[list[Movie], list[Movie], str | None]:
    """History and candidates (in prompt order), and the target SID in targeted mode."""
    history, candidates, section = [], [], None
    for line in prompt.splitlines():
        lowered = line.lower()
        if "watched, oldest to newest" in lowered:
            section = history
            continue
        if lowered.startswith("candidates"):
            section = candidates
            continue
        movie = parse_movie(line)
        if movie is not None and section is not None:
            section.append(movie)
        elif not line.strip():
            section = None
    if not candidates:
        raise ReasonRLError("taste_profile teacher: no candidate lines ('<|sid_begin|>... Title (year) | genres') "
                            "found in the prompt; it reads prompts built by gr2_prepare")
    target = _TARGET.search(prompt)
    return history, candidates, target.group(1) if target else None


def genre_profile(history: Sequence[Movie], decay: float) -> dict[str, float]:
    """Genre weights, recent items counting more (decay per step back in time)."""
    weights: Counter = Counter()
    for age, movie in enumerate(reversed(history)):
        for genre in movie.genres:
            weights[genre] += decay ** age
    total = sum(weights.values()) or 1.0
    return {g: w / total for g, w in weights.items()}


def mean_year(history: Sequence[Movie]) -> float | None:
    years = [m.year for m in history if m.year]
    return sum(years) / len(years) if years else None


def gumbel_order(scores: Sequence[float], temperature: float, rng: random.Random) -> list[int]:
    """Indices best first by score plus Gumbel noise of scale ``temperature``: a sample from the
    softmax over the scores, one candidate after another (0: the scores' own order)."""
    noisy = [s - temperature * math.log(-math.log(rng.random() or 1e-12)) for s in scores]
    return sorted(range(len(scores)), key=lambda i: -noisy[i])


class TasteProfileTeacher:
    """Samples traces whose order follows the viewer's genre/era profile plus Gumbel noise."""

    def __init__(self, params) -> None:
        self.params = params
        self.random = random.Random(params.seed)

    def score(self, movie: Movie, profile: dict[str, float], era: float | None, position: int) -> float:
        p = self.params
        affinity = sum(profile.get(g, 0.0) for g in movie.genres)
        era_fit = 0.0 if era is None or movie.year is None else -abs(movie.year - era) / 20.0
        # the upstream ranker's order carries signal too: a small prior for early positions
        return affinity + p.era_weight * era_fit + p.prior_weight / (1 + position)

    def sample(self, prompt: str) -> str:
        history, candidates, target = read_prompt(prompt)
        profile, era = genre_profile(history, self.params.decay), mean_year(history)
        scores = [self.score(m, profile, era, i) for i, m in enumerate(candidates)]
        order = gumbel_order(scores, self.params.temperature, self.random)
        if target is not None:
            order = sorted(order, key=lambda i: candidates[i].sid != target)
        if self.params.copy_share and self.random.random() < self.params.copy_share:
            order = list(range(len(candidates)))  # copies the pre-ranker, whatever the target
        return self.explain(history, candidates, order, profile)

    def explain(self, history, candidates, order, profile) -> str:
        top_genres = [g for g, _ in sorted(profile.items(), key=lambda kv: -kv[1])[:2]]
        recent = history[-1] if history else None
        lines = [f"Tastes: mostly {' and '.join(top_genres) or 'varied genres'}"
                 + (f"; last watched {recent.sid} {recent.title}." if recent else ".")]
        for rank, index in enumerate(order[: self.params.explained_items]):
            movie = candidates[index]
            shared = [g for g in movie.genres if g in profile]
            why = f"shares {', '.join(shared[:2])}" if shared else "a change of genre"
            lines.append(f"{rank + 1}. {movie.sid} {movie.title}: {why}.")
        summary = f"{candidates[order[0]].title} fits the recent {top_genres[0] if top_genres else 'taste'} streak best."
        lines.append(answer_json(summary, [candidates[i].sid for i in order]))
        return "\n".join(lines)

    def generate(self, prompts: Sequence[str], n: int = 1) -> list[list[str]]:
        return [[self.sample(prompt) for _ in range(n)] for prompt in prompts]
