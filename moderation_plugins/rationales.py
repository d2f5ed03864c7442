"""Reasoning worth keeping: SFT targets that quote the content and the policy clause it meets.

``policy_rationale`` is a rule-based teacher for CPU runs. It reads the teacher prompt that
``moderation_traces`` writes (the classifier prompt, plus the gold label in targeted mode),
finds each label's definition in the policy (the paragraph or list item that bolds the
label), and writes a short trace: the words of the content that overlap that definition
most, the clause of the definition they meet, then the verdict. Without a gold label it
guesses one from the same overlap (a keyword classifier), so rejection sampling keeps the
guesses that match. Samples differ in the quote and clause they pick.
"""

from __future__ import annotations

import math
import random
import re
from typing import Sequence

from pydantic import Field

from reasonrl.core.errors import ReasonRLError
from reasonrl.core.registry import Params
from reasonrl.moderation_plugins.metrics import substantive_words
from reasonrl.moderation_plugins.prompts import parse_policy

GOLD_LINE = "The correct label is "
_POLICY = re.compile(r"You enforce this policy\.\n\n(?P<policy>.*?)\n\nContent:\n<<<\n(?P<content>.*?)\n>>>", re.S)
_LABELS = re.compile(r"'Label: <one of (?P<labels>[^>]*)>'")
_GOLD = re.compile(rf"^{GOLD_LINE}(?P<label>[\w\-]+)\.", re.M)
_CLAUSE_SPLIT = re.compile(r",|;|\(|\)| — | - |:| or (?=\w+ )")


def teacher_prompt(example: dict, targeted: bool) -> str:
    """The student's prompt, with the gold label when the teacher may see it."""
    ask = ("Write the reasoning that leads to it: quote the words of the content that decide it and the "
           "policy clause they meet, then the two verdict lines.")
    return f"{example['prompt']}\n\n{GOLD_LINE}{example['label']}. {ask}" if targeted else example["prompt"]


def stem(word: str) -> str:
    """A crude stem (the first five letters), so 'instructions' meets 'instruct'."""
    return word[:5]


def stems(text: str) -> set[str]:
    return {stem(w) for w in substantive_words(text)}


def label_definitions(policy_text: str, labels: Sequence[str]) -> dict[str, str]:
    """Each label's definition: the paragraph or list item that bolds it (its first one)."""
    _, body = parse_policy(policy_text) if policy_text.startswith("---") else ({}, policy_text)
    blocks = [b.strip() for b in re.split(r"\n\s*\n|\n- ", body) if b.strip()]
    found = {}
    for label in labels:
        bold = re.compile(rf"\*\*{re.escape(label)}\*\*", re.I)
        block = next((b for b in blocks if bold.search(b)), None)
        if block is not None:
            found[label] = " ".join(bold.split(block, maxsplit=1)[-1].split()).lstrip(":").strip()
    return found


def clauses(definition: str, max_words: int = 10) -> list[str]:
    """The definition cut at its commas, brackets and 'or's into clauses of 2+ words."""
    pieces = [" ".join(p.split()) for p in _CLAUSE_SPLIT.split(definition)]
    kept = [p.removeprefix("when ").removeprefix("it ").rstrip(".") for p in pieces if len(p.split()) >= 2]
    return [" ".join(p.split()[:max_words]) for p in kept]


def windows(content: str, size: int) -> list[str]:
    """Runs of ``size`` words, sliding by half a window, within the content's lines."""
    out = []
    for line in content.splitlines():
        words = line.split()
        step = max(size // 2, 1)
        out.extend(" ".join(words[i:i + size]) for i in range(0, max(len(words) - size, 0) + 1, step) if words)
    return out or [" ".join(content.split()[:size])]


def overlap(text: str, reference: set[str]) -> int:
    return len(stems(text) & reference)


class PolicyRationaleParams(Params):
    quote_words: int = Field(8, gt=1, description="words in the quoted span of the content")
    clause_words: int = Field(10, gt=1, description="longest policy clause quoted")
    temperature: float = Field(1.0, ge=0, description=(
        "without a gold label: the guess is sampled with weights exp(overlap / temperature) (0: the best overlap); "
        "with one: unused"))
    probability: float = Field(0.9, gt=0.5, lt=1, description="the stated probability of the answered label")
    seed: int = 0
    """seed of the sampled quote, clause and guess"""


class PolicyRationaleTeacher:
    """Rule-based rationales over the policy's definitions; see the module docstring."""

    def __init__(self, params: PolicyRationaleParams | None = None) -> None:
        self.params = params or PolicyRationaleParams()
        self.rng = random.Random(self.params.seed)

    def generate(self, prompts: Sequence[str], n: int = 1) -> list[list[str]]:
        return [[self.trace(prompt) for _ in range(n)] for prompt in prompts]

    def trace(self, prompt: str) -> str:
        policy, content, labels, gold = read_prompt(prompt)
        definitions = label_definitions(policy, labels)
        missing = [label for label in labels if label not in definitions]
        if missing:
            raise ReasonRLError(f"policy_rationale: the policy bolds no definition for {missing} (write "
                                f"'**{missing[0]}** when ...' in the policy); it defines {sorted(definitions)}")
        label = gold or self.guess(content, definitions)
        quote, clause = self.evidence(content, definitions[label])
        positive = labels[-1]
        probability = self.params.probability if label == positive else 1 - self.params.probability
        return (f'The content says "{quote}". This meets the policy\'s {label} clause: "{clause}".\n'
                f"Label: {label}\nProbability: {probability:.1f}")

    def guess(self, content: str, definitions: dict[str, str]) -> str:
        scores = {label: overlap(content, stems(text)) for label, text in definitions.items()}
        if self.params.temperature == 0:
            return max(scores, key=scores.get)
        weights = [math.exp(score / self.params.temperature) for score in scores.values()]
        return self.rng.choices(list(scores), weights=weights)[0]

    def evidence(self, content: str, definition: str) -> tuple[str, str]:
        """A quote among the content's best-overlapping spans and the clause it meets best."""
        reference = stems(definition)
        spans = windows(content, self.params.quote_words)
        best = sorted(spans, key=lambda s: -overlap(s, reference))[:3]
        quote = self.rng.choice(best).replace('"', "'")
        options = clauses(definition, self.params.clause_words) or [" ".join(definition.split()[:10])]
        quoted = stems(quote)
        best_overlap = max(overlap(c, quoted) for c in options)
        return quote, self.rng.choice([c for c in options if overlap(c, quoted) == best_overlap])


def read_prompt(prompt: str) -> tuple[str, str, list[str], str | None]:
    """(policy text, content, labels, gold label or None) from a classifier or teacher prompt."""
    body, labels = _POLICY.search(prompt), _LABELS.search(prompt)
    if body is None or labels is None:
        raise ReasonRLError("policy_rationale reads the moderation classifier prompt (policy, content between "
                            "<<< and >>>, the 'Label: <one of ...>' line); this prompt has no such parts: "
                            f"{prompt[:120]!r}...")
    names = [name.strip() for name in labels.group("labels").split(",")]
    gold = _GOLD.search(prompt)
    if gold is not None and gold.group("label") not in names:
        raise ReasonRLError(f"policy_rationale: the gold label {gold.group('label')!r} is not one of {names}")
    return body.group("policy"), body.group("content"), names, gold.group("label") if gold else None
