"""Constrained decoding over semantic IDs: every SID the model writes is a real item.

Generative recommenders decode item codes under a trie of valid codes; here the trie is
built per prompt from its candidates (and, in the reasoning, its history). Inside the
``"recommendations"`` list an item already listed is removed from the trie, and the list's
punctuation is forced (``": ["``, ``", "`` between items, ``"]}`` and end-of-sequence after the
last candidate), so an answer that reaches the list is a complete permutation in valid JSON.
Inside the explanation string no token may break the JSON (a stray quote, a backslash, a
control character), and its closing quote leads to the ``recommendations`` key, which is forced
too; no answer may end before its list is closed. Where the config asks (``close_at_budget``:
evaluation and inference, not RL rollouts), a ``"recommendations`` key written outside any opened
object starts a proper answer object after it (the parser reads the first object that parses),
and, told the decoder's ``max_new_tokens``, the constraint keeps room for the whole list: a
free-text reasoning that would leave less is closed there and the answer started
(``", "recommendations": ["``, or a new ``{"explanation": "", ...`` outside the explanation).
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from typing import Sequence

from pydantic import Field

from reasonrl.core.registry import Params
from reasonrl.plugins.engine.constraint_kit import (KeepsRoomForAnswer, prefix_tokens, token_text, token_texts,
                                                    tokens_accepted)
from reasonrl.plugins.engine.rollout import Excluding

CODE = re.compile(r"<s_[a-z]_\d+>")


# what the answer looks like around SIDs: '{"explanation": "...", "recommendations": ["<sid>", "<sid>"]}'
LIST_OPEN, LIST_NEXT, LIST_CLOSE = '": ["', '", "', '"]}'
EXPLANATION_OPEN, EXPLANATION_END, KEY_AND_LIST_OPEN = '{"explanation": "', '", "', 'recommendations": ["'
# what closes a reasoning cut by the budget, inside the explanation string or outside it
CLOSE_EXPLANATION, WHOLE_ANSWER_OPEN = EXPLANATION_END + KEY_AND_LIST_OPEN, '{"explanation": "", "recommendations": ["'


def sid_codes(sid: str) -> tuple[str, ...]:
    return tuple(CODE.findall(sid))


@lru_cache(maxsize=8)
def string_breakers(tokenizer) -> tuple[int, ...]:
    """Tokens that would break the explanation's JSON string: a control character, a backslash,
    or a quote that does not start the string's close (``", "recommendations": ["``)."""
    out = []
    for token, text in enumerate(token_texts(tokenizer)):
        quote = text.find('"')
        stray_quote = quote >= 0 and not CLOSE_EXPLANATION.startswith(text[quote:])
        if stray_quote or "\\" in text or any(ord(c) < 32 for c in text):
            out.append(token)
    return tuple(out)


class SIDConstraint(KeepsRoomForAnswer):
    """Per-row state machine fed one token at a time (``advance``); ``allowed`` gives the token
    ids the next position may take, an ``Excluding`` of the few it may not (free text), or None
    when any token may follow."""

    ANSWER_KEY = '"recommendations'

    def __init__(self, tokenizer, candidates: Sequence[str], history: Sequence[str] = ()) -> None:
        from reasonrl.gr2_plugins.semantic_ids import SID_BEGIN, SID_END

        self.begin, self.end = tokenizer.convert_tokens_to_ids(SID_BEGIN), tokenizer.convert_tokens_to_ids(SID_END)
        self.candidates = {sid_codes(s) for s in candidates}
        self.citable = self.candidates | {sid_codes(s) for s in history}
        codes = {c for sid in self.citable for c in sid}
        self.ids = {c: tokenizer.convert_tokens_to_ids(c) for c in codes}
        self.codes = {i: c for c, i in self.ids.items()}
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        self.inside: list[str] | None = None
        self.in_answer = False
        self.listed: set[tuple[str, ...]] = set()
        self.tail = ""
        self.explaining = False  # inside the explanation string
        # inside the answer list: the punctuation still to write before the next special token
        # (a SID's begin, or end-of-sequence); None once the model has left the expected shape
        self.literal: str | None = None
        self.then: int | None = None
        self.close_at_budget = True  # SIDTrie sets its param; a rule built directly keeps room
        self.budget: int | None = None  # tokens the decoder may write (set_budget); None: no limit
        self.written = 0
        self.forced = False  # the budget closed the reasoning

    def __deepcopy__(self, memo):
        # one copy per sample; the tokenizer and the code tables are shared, read-only
        clone = copy.copy(self)
        clone.listed = set(self.listed)
        clone.inside = None if self.inside is None else list(self.inside)
        return clone

    def answer_room(self) -> int:
        """Tokens the longest answer from here may take: the opening, then each candidate (its SID
        and a separator, one token per character at worst), the close and end-of-sequence."""
        sid = 2 + max((len(c) for c in self.candidates), default=0)
        return len(WHOLE_ANSWER_OPEN) + len(self.candidates) * (sid + len(LIST_NEXT)) + len(LIST_CLOSE) + 1

    room = answer_room

    def answer_started(self) -> bool:
        return self.in_answer or self.inside is not None  # never close inside a SID

    def open_answer(self) -> None:
        self.in_answer = True
        self.literal, self.then = (CLOSE_EXPLANATION if self.explaining else WHOLE_ANSWER_OPEN), self.begin

    def pool(self) -> set[tuple[str, ...]]:
        return self.candidates - self.listed if self.in_answer else self.citable

    def allowed(self) -> list[int] | Excluding | None:
        if self.inside is None:
            return self._punctuation()
        depth = len(self.inside)
        matching = [sid for sid in self.pool() if sid[:depth] == tuple(self.inside)]
        if not matching:
            return None  # nothing valid left under this prefix: let the parser report it
        if depth == len(matching[0]):
            return [self.end]
        return sorted({self.ids[sid[depth]] for sid in matching})

    def _punctuation(self) -> list[int] | Excluding | None:
        if not self.in_answer:  # free text: it may not end before the answer, nor break the explanation
            return Excluding(string_breakers(self.tokenizer) + (self.eos,) if self.explaining else (self.eos,))
        if self.literal is None:
            return None
        if self.literal:
            return prefix_tokens(self.tokenizer, self.literal) or None
        return [self.then]

    def advance(self, token: int) -> None:
        self.written += 1
        self._advance_state(token)
        self.close_if_out_of_room()

    def _advance_state(self, token: int) -> None:
        if token == self.begin:
            self.inside = []
            if self.literal != "":  # a SID before the punctuation was written: off the expected shape
                self.literal = None
        elif self.inside is not None:
            self._advance_in_sid(token)
        elif self.in_answer:
            self._advance_punctuation(token)
        else:
            self._advance_free(token)

    def _advance_free(self, token: int) -> None:
        self.tail = (self.tail + self._text(token))[-40:]
        if EXPLANATION_OPEN in self.tail:
            self.tail = self.tail.rsplit(EXPLANATION_OPEN, 1)[1]
            self.explaining = True
        if self.ANSWER_KEY in self.tail:
            before, written = self.tail.rsplit(self.ANSWER_KEY, 1)
            if self.explaining or before.rstrip().endswith("{"):
                self._enter_answer(LIST_OPEN, written)
            elif self.close_at_budget:  # the key of an object never opened: a proper answer object begins
                self.in_answer, self.literal, self.then = True, WHOLE_ANSWER_OPEN, self.begin
            # else (RL rollouts): no repair; the rollout fails to parse unless the model opens an object itself
        elif self.explaining and '"' in self.tail:  # string_breakers leave only the string's close
            self._enter_answer(CLOSE_EXPLANATION, self.tail[self.tail.index('"'):])

    def _advance_in_sid(self, token: int) -> None:
        if token == self.end:
            if self.in_answer:
                self.listed.add(tuple(self.inside))
                if self.literal == "":
                    done = not (self.candidates - self.listed)
                    self.literal, self.then = (LIST_CLOSE, self.eos) if done else (LIST_NEXT, self.begin)
            self.inside = None
        elif token in self.codes:
            self.inside.append(self.codes[token])
        else:
            self.inside = None  # the model broke off the SID; the parser will say so
            self.literal = None

    def _text(self, token: int) -> str:
        return token_text(self.tokenizer, token)

    def _enter_answer(self, expected: str, written: str) -> None:
        """The answer list comes next: ``expected`` leads to its first SID, of which ``written``
        is already there."""
        self.in_answer = True
        self.literal, self.then = (expected[len(written):], self.begin) if expected.startswith(written) else (None, None)

    def _advance_punctuation(self, token: int) -> None:
        text = self._text(token)
        if self.literal and text and self.literal.startswith(text):
            self.literal = self.literal[len(text):]
        else:
            self.literal = None  # the model left the expected shape (possible only unconstrained)


def prompt_sids(prompt: str) -> list[str]:
    """Every SID a prompt shows (history and candidates)."""
    return re.findall(r"<\|sid_begin\|>.*?<\|sid_end\|>", prompt)


class SIDTrieParams(Params):
    close_at_budget: bool = False
    """repair answers the model did not open (evaluation, inference): keep room for the answer
    list and close a reasoning that would leave less, and open a proper answer object after a
    ``"recommendations`` key written outside any object. Off for RL rollouts: there a rollout
    that never opens its answer must score as one, or the policy learns that the repair is as
    good as answering (measured: one RL run had 84% of its answers opened by the key repair)"""


def constraint_opened(text: str) -> bool:
    """True when the constraint opened the answer object: the model never opened one (its budget
    ran low, or it wrote the answer key outside an object). Closes inside a too-long
    explanation leave no such mark and are not counted."""
    return WHOLE_ANSWER_OPEN in text


class SIDTrie:
    """The ``sid_trie`` decoding constraint: a :class:`SIDConstraint` per example."""

    def __init__(self, params: SIDTrieParams | None = None) -> None:
        self.params = params or SIDTrieParams()

    def for_example(self, tokenizer, example) -> SIDConstraint:
        rule = SIDConstraint(tokenizer, example["candidates"], prompt_sids(example.get("prompt", "")))
        rule.close_at_budget = self.params.close_at_budget
        return rule


INDEX_CLOSE_EXPLANATION = '", "recommendations": ['
INDEX_ANSWER_OPEN = '{"explanation": "", "recommendations": ['
INDEX_KEY_REST = '": ['
LIST_CHARS = frozenset("0123456789, ]}")


class NumberList:
    """Reads ``3, 1, 10]}`` character by character: distinct numbers in 1..size, at most
    ``max_items`` of them, ``, `` between, ``]}`` at the end; ``feed`` says whether a text keeps
    it a prefix of such a list."""

    def __init__(self, size: int, max_items: int) -> None:
        self.size, self.max_items = size, max_items
        self.listed: tuple[int, ...] = ()
        self.number, self.state = "", "digit"

    def _fits(self, digits: str) -> bool:
        return any(str(n).startswith(digits) for n in range(1, self.size + 1) if n not in self.listed)

    def _complete(self) -> bool:
        return self.number.isdigit() and 1 <= int(self.number) <= self.size and int(self.number) not in self.listed

    def _step(self, char: str) -> bool:
        if self.state in ("digit", "number") and char.isdigit():
            if not self._fits(self.number + char) or (self.number == "" and char == "0"):
                return False
            self.number, self.state = self.number + char, "number"
        elif self.state == "number" and char in ",]" and self._complete():
            if char == "," and len(self.listed) + 1 >= self.max_items:
                return False
            self.listed, self.number = self.listed + (int(self.number),), ""
            self.state = "space" if char == "," else "brace"
        elif (self.state, char) in (("space", " "), ("brace", "}")):
            self.state = "digit" if char == " " else "done"
        else:
            return False
        return True

    def feed(self, text: str) -> bool:
        for char in text:
            if not self._step(char):
                return False
        return True

    def copy(self) -> "NumberList":
        return copy.copy(self)


class IndexConstraint(KeepsRoomForAnswer):
    """The ``index_list`` rule for one example: free reasoning that may not end the answer early
    nor break the explanation string; once the ``"recommendations`` key is written, only a list
    of distinct candidate numbers and its close; end-of-sequence after it. With a budget
    (``set_budget``) it keeps room to write the whole list and closes a reasoning that would
    leave less."""

    def __init__(self, tokenizer, size: int, max_items: int, close_at_budget: bool = True) -> None:
        self.tokenizer, self.eos = tokenizer, tokenizer.eos_token_id
        self.numbers = NumberList(size, max_items)
        self.close_at_budget, self.budget, self.written = close_at_budget, None, 0
        self.tail, self.explaining = "", False
        self.literal: str | None = None  # punctuation still to write before the list
        self.in_answer = False

    def __deepcopy__(self, memo):
        clone = copy.copy(self)
        clone.numbers = self.numbers.copy()
        return clone

    def room(self) -> int:
        return len(INDEX_ANSWER_OPEN) + self.numbers.max_items * (len(str(self.numbers.size)) + 2) + 3

    def answer_started(self) -> bool:
        return self.in_answer

    def open_answer(self) -> None:
        self.in_answer = True
        self.literal = INDEX_CLOSE_EXPLANATION if self.explaining else INDEX_ANSWER_OPEN

    def allowed(self) -> list[int] | Excluding | None:
        if not self.in_answer:
            return Excluding(string_breakers(self.tokenizer) + (self.eos,) if self.explaining else (self.eos,))
        if self.literal is None:
            return None
        if self.literal:
            return prefix_tokens(self.tokenizer, self.literal) or None
        if self.numbers.state == "done":
            return [self.eos]
        return tokens_accepted(self.tokenizer, LIST_CHARS, lambda text: self.numbers.copy().feed(text)) or None

    def advance(self, token: int) -> None:
        self.written += 1
        text = token_text(self.tokenizer, token)
        if not self.in_answer:
            self._advance_free(text)
        elif self.literal:
            self.literal = self.literal[len(text):] if self.literal.startswith(text) and text else None
        elif self.literal == "" and not self.numbers.feed(text):
            self.literal = None  # left the list's shape (possible only unconstrained): the parser reports it
        self.close_if_out_of_room()

    def _advance_free(self, text: str) -> None:
        self.tail = (self.tail + text)[-40:]
        if EXPLANATION_OPEN in self.tail:
            self.tail, self.explaining = self.tail.rsplit(EXPLANATION_OPEN, 1)[1], True
        if SIDConstraint.ANSWER_KEY in self.tail:
            before, written = self.tail.rsplit(SIDConstraint.ANSWER_KEY, 1)
            if self.explaining or before.rstrip().endswith("{"):
                self._enter_list(INDEX_KEY_REST, written)
            else:  # the key of an object never opened: a proper answer object follows (evaluation), or
                # the rollout fails to parse (rl: the repair must not be as good as answering)
                self.in_answer, self.literal = True, (INDEX_ANSWER_OPEN if self.close_at_budget else None)
        elif self.explaining and '"' in self.tail:
            self._enter_list(INDEX_CLOSE_EXPLANATION, self.tail[self.tail.index('"'):])

    def _enter_list(self, expected: str, written: str) -> None:
        self.in_answer = True
        if expected.startswith(written):
            self.literal = expected[len(written):]
        elif written.startswith(expected) and self.numbers.feed(written[len(expected):]):
            self.literal = ""
        else:
            self.literal = None


class IndexListParams(Params):
    max_items: int | None = Field(None, gt=0, description="the most numbers an answer may list (default: all)")
    close_at_budget: bool = Field(False, description="keep room for the list and close a reasoning that would "
                                  "leave less (evaluation and inference; off for RL rollouts, as for sid_trie)")


class IndexList:
    """The ``index_list`` decoding constraint: an :class:`IndexConstraint` per example."""

    def __init__(self, params: IndexListParams | None = None) -> None:
        self.params = params or IndexListParams()

    def for_example(self, tokenizer, example) -> IndexConstraint:
        size = len(example["candidates"])
        return IndexConstraint(tokenizer, size, min(self.params.max_items or size, size), self.params.close_at_budget)
