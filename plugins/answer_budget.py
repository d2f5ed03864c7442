"""A decoding rule that always leaves room to finish its answer within the decoder's budget."""

from __future__ import annotations


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
