"""Parse a moderation answer: reasoning, then ``Label: <label>`` and ``Probability: <0..1>``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

LABEL = re.compile(r"\**\blabel\**\s*[:=]\s*\**\s*([A-Za-z_\-]+)", re.IGNORECASE)  # **Label:** too
PROBABILITY = re.compile(r"probability\s*[:=]\s*\**\s*([0-9]*\.?[0-9]+)\s*(%?)", re.IGNORECASE)

NO_LABEL = "no_label"
UNKNOWN_LABEL = "unknown_label"
NO_PROBABILITY = "no_probability"
BAD_PROBABILITY = "bad_probability"


@dataclass
class ParsedVerdict:
    reasoning: str
    label: str | None
    probability: float | None  # probability that the content belongs to the positive label
    error: str | None


def parse_verdict(text: str, labels: Sequence[str]) -> ParsedVerdict:
    """The last ``Label:`` line decides; the reasoning is what comes before it.

    >>> parse_verdict("Looks like a sale pitch.\\nLabel: spam\\nProbability: 0.9", ["ham", "spam"]).label
    'spam'
    """
    matches = list(LABEL.finditer(text))
    if not matches:
        return ParsedVerdict(text.strip(), None, None, NO_LABEL)
    last = matches[-1]
    reasoning = text[: last.start()].strip()
    label = last.group(1).lower()
    known = {l.lower(): l for l in labels}
    if label not in known:
        return ParsedVerdict(reasoning, None, None, UNKNOWN_LABEL)
    prob_match = PROBABILITY.search(text, last.end())
    if prob_match is None:
        return ParsedVerdict(reasoning, known[label], None, NO_PROBABILITY)
    value = float(prob_match.group(1)) / (100 if prob_match.group(2) else 1)
    if not 0.0 <= value <= 1.0:
        return ParsedVerdict(reasoning, known[label], None, BAD_PROBABILITY)
    return ParsedVerdict(reasoning, known[label], value, None)
