"""Constrained decoding over semantic IDs: every SID the model writes is a real item.

Generative recommenders decode item codes under a trie of valid codes; here the trie is
built per prompt from its candidates (and, in the reasoning, its history). Inside the
``"recommendations"`` list an item already listed is removed from the trie, so a complete
list is always a permutation. Outside SIDs the model writes freely.
"""

from __future__ import annotations

import re
from typing import Sequence

CODE = re.compile(r"<s_[a-z]_\d+>")


def sid_codes(sid: str) -> tuple[str, ...]:
    return tuple(CODE.findall(sid))


class SIDConstraint:
    """Per-row state machine fed one token at a time (``advance``); ``allowed`` lists the
    token ids the next position may take, or None when any token may follow."""

    ANSWER_KEY = "recommendations"

    def __init__(self, tokenizer, candidates: Sequence[str], history: Sequence[str] = ()) -> None:
        from reasonrl.gr2_plugins.semantic_ids import SID_BEGIN, SID_END

        self.begin, self.end = tokenizer.convert_tokens_to_ids(SID_BEGIN), tokenizer.convert_tokens_to_ids(SID_END)
        self.candidates = {sid_codes(s) for s in candidates}
        self.citable = self.candidates | {sid_codes(s) for s in history}
        codes = {c for sid in self.citable for c in sid}
        self.ids = {c: tokenizer.convert_tokens_to_ids(c) for c in codes}
        self.codes = {i: c for c, i in self.ids.items()}
        self.decode = lambda token: tokenizer.decode([token])
        self.inside: list[str] | None = None
        self.in_answer = False
        self.listed: set[tuple[str, ...]] = set()
        self.tail = ""

    def pool(self) -> set[tuple[str, ...]]:
        return self.candidates - self.listed if self.in_answer else self.citable

    def allowed(self) -> list[int] | None:
        if self.inside is None:
            return None
        depth = len(self.inside)
        matching = [sid for sid in self.pool() if sid[:depth] == tuple(self.inside)]
        if not matching:
            return None  # nothing valid left under this prefix: let the parser report it
        if depth == len(matching[0]):
            return [self.end]
        return sorted({self.ids[sid[depth]] for sid in matching})

    def advance(self, token: int) -> None:
        if token == self.begin:
            self.inside = []
        elif self.inside is not None:
            if token == self.end:
                if self.in_answer:
                    self.listed.add(tuple(self.inside))
                self.inside = None
            elif token in self.codes:
                self.inside.append(self.codes[token])
            else:
                self.inside = None  # the model broke off the SID; the parser will say so
        elif not self.in_answer:
            self.tail = (self.tail + self.decode(token))[-40:]
            self.in_answer = self.ANSWER_KEY in self.tail


def prompt_sids(prompt: str) -> list[str]:
    """Every SID a prompt shows (history and candidates)."""
    return re.findall(r"<\|sid_begin\|>.*?<\|sid_end\|>", prompt)


class SIDTrie:
    """The ``sid_trie`` decoding constraint: a :class:`SIDConstraint` per example."""

    def __init__(self, params=None) -> None:
        self.params = params

    def for_example(self, tokenizer, example) -> SIDConstraint:
        return SIDConstraint(tokenizer, example["candidates"], prompt_sids(example.get("prompt", "")))
