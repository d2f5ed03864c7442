"""Pieces for decoding constraints: token texts, the tokens that write a literal or stay within
an alphabet, and a rule that always leaves room to finish its answer within the budget."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=8)
def token_texts(tokenizer) -> tuple[str, ...]:
    """Each token id's text alone (computed once per tokenizer)."""
    return tuple(tokenizer.decode([i]) for i in range(len(tokenizer)))


def token_text(tokenizer, token: int) -> str:
    """One token's text; empty for a model row past the tokenizer's vocabulary."""
    texts = token_texts(tokenizer)
    return texts[token] if token < len(texts) else ""


@lru_cache(maxsize=256)
def _prefix_tokens(tokenizer, literal: str) -> tuple[int, ...]:
    return tuple(i for i, text in enumerate(token_texts(tokenizer)) if text and literal.startswith(text))


def prefix_tokens(tokenizer, literal: str) -> list[int]:
    """Token ids whose text is a non-empty prefix of ``literal``: the tokens that keep writing it."""
    return list(_prefix_tokens(tokenizer, literal))


@lru_cache(maxsize=32)
def tokens_within(tokenizer, alphabet: frozenset) -> tuple[tuple[int, str], ...]:
    """(id, text) of the tokens written with characters of ``alphabet`` only."""
    return tuple((i, t) for i, t in enumerate(token_texts(tokenizer)) if t and set(t) <= alphabet)


@lru_cache(maxsize=32)
def tokens_by_first_char(tokenizer, alphabet: frozenset) -> dict[str, tuple[tuple[int, str], ...]]:
    """:func:`tokens_within` grouped by their first character."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for i, text in tokens_within(tokenizer, alphabet):
        groups.setdefault(text[0], []).append((i, text))
    return {char: tuple(group) for char, group in groups.items()}


def tokens_accepted(tokenizer, alphabet: frozenset, accepts) -> list[int]:
    """Ids (ascending) of the tokens within ``alphabet`` whose text ``accepts(text)`` takes. The
    answer readers take text character by character, so a token whose first character is refused
    is refused whole: only the groups of accepted first characters are tried (a few hundred
    tokens instead of every token of the alphabet, about 12,000 in SmolLM2's vocabulary)."""
    groups = tokens_by_first_char(tokenizer, alphabet)
    return sorted(i for char, group in groups.items() if accepts(char) for i, text in group if accepts(text))


class KeepsRoomForAnswer:
    """Mixin for per-example decoding rules whose answer has a bounded length. Told the
    decoder's ``max_new_tokens`` (``set_budget``), the rule starts the answer itself
    (``open_answer``) as soon as fewer tokens than ``room()`` would be left, so a reasoning
    that runs long never costs the answer. The rule counts its tokens in ``written`` and says
    in ``answer_started()`` whether the answer is under way."""

    close_at_budget: bool = True
    budget: int | None = None
    written: int = 0
    forced: bool = False  # the budget started the answer

    def room(self) -> int:
        raise NotImplementedError

    def answer_started(self) -> bool:
        raise NotImplementedError

    def open_answer(self) -> None:
        raise NotImplementedError

    def set_budget(self, max_new_tokens: int) -> None:
        if self.close_at_budget:
            self.budget = max_new_tokens
            self.close_if_out_of_room()

    def close_if_out_of_room(self) -> None:
        if self.budget is None or self.answer_started() or self.budget - self.written > self.room():
            return
        self.forced = True
        self.open_answer()
