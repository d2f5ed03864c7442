"""The ``verdict_close`` decoding constraint: every answer ends with a verdict that parses.

The reasoning is free, but it may not end before the verdict; once ``Label:`` is written (or
when the token budget leaves just room for the verdict, which is then started), only a known
label may follow, then ``Probability: `` and a number in [0, 1] with at most two decimals,
then end-of-sequence. A cut answer is otherwise rewarded like a wrong one, and its
probability is lost to the scores.
"""

from __future__ import annotations

import copy
import re
from typing import Sequence

from pydantic import Field

from reasonrl.core.registry import Params
from reasonrl.plugins.engine.constraint_kit import KeepsRoomForAnswer, prefix_tokens, token_text, tokens_accepted

LABEL_KEY, PROBABILITY_KEY = "Label:", "\nProbability: "
VERDICT_OPEN = "\n" + LABEL_KEY
NUMBER = re.compile(r"(0(\.\d{0,2})?|1(\.0{0,2})?)")


class Verdict:
    """Reads the verdict after ``Label:`` character by character: `` <label>``, then
    ``\\nProbability: ``, then a number; ``feed`` says whether a text keeps it a valid prefix."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = [" " + label for label in labels]
        self.written, self.part = "", "label"

    def _ok(self) -> bool:
        if self.part == "label":
            return any(label.startswith(self.written) for label in self.labels)
        if self.part == "key":
            return PROBABILITY_KEY.startswith(self.written)
        return NUMBER.fullmatch(self.written) is not None or self.written == ""

    def _step(self, char: str) -> bool:
        self.written += char
        if self._ok():
            return True
        if self.part == "label" and self.written[:-1] in self.labels:
            self.part, self.written = "key", char
        elif self.part == "key" and self.written[:-1] == PROBABILITY_KEY:
            self.part, self.written = "number", char
        else:
            return False
        return self._ok()

    def feed(self, text: str) -> bool:
        return all(self._step(char) for char in text)

    @property
    def complete(self) -> bool:
        return self.part == "number" and NUMBER.fullmatch(self.written) is not None and not self.written.endswith(".")

    @property
    def full(self) -> bool:
        """Nothing more may be written: two decimals, or a bare 1.00."""
        return self.complete and len(self.written) == 4

    def copy(self) -> "Verdict":
        return copy.copy(self)


class VerdictRule(KeepsRoomForAnswer):
    """One example's rule: free reasoning, then the verdict; ``set_budget`` keeps room for it."""

    def __init__(self, tokenizer, labels: Sequence[str], close_at_budget: bool = True) -> None:
        self.tokenizer, self.eos = tokenizer, tokenizer.eos_token_id
        self.verdict = Verdict(labels)
        self.alphabet = frozenset("".join(self.verdict.labels) + PROBABILITY_KEY + "0123456789.")
        self.close_at_budget, self.budget, self.written = close_at_budget, None, 0
        self.tail, self.literal, self.in_verdict = "", None, False

    def __deepcopy__(self, memo):
        clone = copy.copy(self)
        clone.verdict = self.verdict.copy()
        return clone

    def room(self) -> int:
        longest = max(len(label) for label in self.verdict.labels)
        return len(VERDICT_OPEN) + longest + len(PROBABILITY_KEY) + 4 + 1

    def answer_started(self) -> bool:
        return self.in_verdict

    def open_answer(self) -> None:
        self.in_verdict, self.literal = True, VERDICT_OPEN

    def allowed(self):
        from reasonrl.plugins.engine.rollout import Excluding

        if not self.in_verdict:
            return Excluding((self.eos,))
        if self.literal:
            return prefix_tokens(self.tokenizer, self.literal) or None
        if self.verdict.full:
            return [self.eos]
        allowed = tokens_accepted(self.tokenizer, self.alphabet, lambda text: self.verdict.copy().feed(text))
        return allowed + [self.eos] if self.verdict.complete else allowed or None

    def advance(self, token: int) -> None:
        self.written += 1
        text = token_text(self.tokenizer, token)
        if not self.in_verdict:
            self.tail = (self.tail + text)[-20:]
            if LABEL_KEY in self.tail:  # the model opened the verdict itself
                self.in_verdict = True
                if not self.verdict.feed(self.tail.rsplit(LABEL_KEY, 1)[1]):
                    self.in_verdict = False  # (possible only unconstrained) let the parser judge it
        elif self.literal:
            self.literal = self.literal[len(text):] if self.literal.startswith(text) else ""
        elif not self.verdict.feed(text):
            self.in_verdict = False
        self.close_if_out_of_room()


class VerdictCloseParams(Params):
    close_at_budget: bool = Field(True, description=(
        "keep room for the verdict and start it when the reasoning would leave less (a cut answer scores as wrong)"))


class VerdictClose:
    """The ``verdict_close`` decoding constraint: a :class:`VerdictRule` per example (its ``labels``)."""

    def __init__(self, params: VerdictCloseParams | None = None) -> None:
        self.params = params or VerdictCloseParams()

    def for_example(self, tokenizer, example) -> VerdictRule:
        return VerdictRule(tokenizer, example["labels"], self.params.close_at_budget)
